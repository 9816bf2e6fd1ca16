"""CUDA graphs for the parts of DINO whose shapes are fixed by the input size.

A training step of DINO-4scale R50 dispatches about 6,700 operators (bench/README.md),
and at batch 4 on an H100/H200 the host's launches, not the GPU's arithmetic, bound the
step. A CUDA graph replays a captured sequence of kernels with one launch. Two parts
qualify, because nothing in them depends on the data (no host sync, shapes fixed by the
image size):

* ``GraphedEncode`` (training): ``DINO.encode`` (backbone, projections, encoder)
  forward and backward, one graph pair per input shape, through
  ``torch.cuda.make_graphed_callables``. The decoder and the loss stay eager: the
  denoising queries' count and the Hungarian matching depend on the targets.
* ``GraphedInference``: the whole detector at inference, one graph per batch shape;
  validation, ``dino evaluate`` and ``dino inference`` run through it on GPUs
  (``inference_runner``). Measured on an H200 at batch 4, 800x800, bf16: 224 img/s
  against 80 eager (``bench/README.md``).

``GraphedEncode`` (opt-in, ``bench/model_speed.py --cuda-graphs``) keeps at most
``max_graphs`` shapes, the oldest dropped: multi-scale training would need batches padded
to a few fixed sizes (``dataset.augmentation.fixed_padding``). Under autocast, the
autocast weight cache must be off inside a capture (``cache_enabled=False``).
"""

from __future__ import annotations

import collections
import os
import warnings
import weakref

import torch
from torch import Tensor, nn

from dino.models import constants


class _Encode(nn.Module):
    """The eager ``DINO.encode`` as a module of tensors in, tensors out (what graph
    capture needs); the detector is a submodule so that its parameters get gradients."""

    def __init__(self, detector: nn.Module, eager):
        super().__init__()
        self.detector, self._eager = detector, eager

    def forward(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory, mask, valid_ratios, _ = self._eager(images, masks)
        return memory, mask, valid_ratios


class GraphedEncode:
    """Replaces ``detector.encode`` by CUDA-graph replays in training mode.

    ``install()`` swaps the method in; eval-mode calls (validation) and calls with grad
    disabled run the eager path. The graphed outputs are static buffers rewritten by the
    next replay: a training step consumes them before the next one starts.
    """

    def __init__(self, detector: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = 3):
        self.detector, self.autocast_dtype, self.max_graphs = detector, autocast_dtype, max_graphs
        self._eager = detector.encode
        self._graphs: collections.OrderedDict[tuple, tuple[nn.Module, list]] = collections.OrderedDict()

    def install(self) -> GraphedEncode:
        self.detector.encode = self
        return self

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def __call__(self, images: Tensor, masks: Tensor):
        if not (self.detector.training and torch.is_grad_enabled() and images.is_cuda):
            return self._eager(images, masks)
        key = (tuple(images.shape), tuple(masks.shape), images.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            # the level shapes are constants of the input size: read them once, eagerly
            with torch.no_grad(), self._autocast():
                shapes = self._eager(images, masks)[3]
            with self._autocast():
                graphed = torch.cuda.make_graphed_callables(_Encode(self.detector, self._eager), (images, masks),
                                                            num_warmup_iters=3, allow_unused_input=True)
            if len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            # the cached per-shape constants the graphs read stay alive with them (dino.models.constants)
            entry = self._graphs[key] = (graphed, shapes, constants.snapshot())
        graphed, shapes, _held = entry
        self._graphs.move_to_end(key)
        with self._autocast():
            memory, mask, valid_ratios = graphed(images, masks)
        return memory, mask, valid_ratios, shapes


class GraphedInference:
    """``model(images, masks)`` at inference, replayed from one CUDA graph per batch shape.

    A shape is captured the second time it is seen (a one-off shape, such as a last short
    batch, runs eagerly) and at most ``max_graphs`` shapes are captured, so shape churn
    costs at most that many captures. Off the GPU, in training mode, with
    ``DINO_CUDA_GRAPHS=0``, or after a capture failed (one warning), it runs the model
    eagerly. ``last_path`` says what the last call ran: ``graph`` or ``eager``.

    Returns the detector's output dict; a replay's tensors are static buffers rewritten
    by the next replay of that shape, so consume (or copy) them first.
    """

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = 4,
                 min_seen: int = 2):
        self.model, self.autocast_dtype = model, autocast_dtype
        self.max_graphs, self.min_seen = max_graphs, min_seen
        self._graphs: dict[tuple, tuple] = {}
        self._seen: collections.Counter[tuple] = collections.Counter()
        self.disabled = os.environ.get("DINO_CUDA_GRAPHS", "1") == "0"
        self.last_path: str | None = None

    def _autocast(self, cache: bool = True):
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=cache)

    def _capture(self, images: Tensor, masks: Tensor) -> tuple:
        static_images, static_masks = images.clone(), masks.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), self._autocast(cache=False):  # warm-up: first-use checks, cached constants
            for _ in range(2):
                self.model(static_images, static_masks)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread allocates pinned host memory
        # while this thread captures; under the default (global) mode that call fails the
        # capture (cudaErrorStreamCaptureUnsupported: every `dino evaluate` and `dino
        # inference` on an H200 did, their first batches' pinned buffers not yet cached)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), self._autocast(cache=False):
            out = self.model(static_images, static_masks)
        # the cached per-shape constants the graph read stay alive with it (dino.models.constants)
        return graph, static_images, static_masks, out, constants.snapshot()

    @torch.no_grad()
    def __call__(self, images: Tensor, masks: Tensor) -> dict:
        key = (tuple(images.shape), tuple(masks.shape), images.dtype, images.device)
        entry = self._graphs.get(key)
        if entry is None and not (self.disabled or self.model.training or not images.is_cuda):
            self._seen[key] += 1
            if self._seen[key] >= self.min_seen and len(self._graphs) < self.max_graphs:
                try:
                    entry = self._graphs[key] = self._capture(images, masks)
                except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly from now on
                    self.disabled = True
                    warnings.warn(f"CUDA graph capture of the detector failed ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); inference "
                                  "runs eagerly (DINO_CUDA_GRAPHS=0 skips the attempt)", RuntimeWarning, stacklevel=2)
        if entry is None or self.model.training:
            self.last_path = "eager"
            with self._autocast():
                return self.model(images, masks)
        graph, static_images, static_masks, out, _held = entry
        static_images.copy_(images)
        static_masks.copy_(masks)
        graph.replay()
        self.last_path = "graph"
        return out


_RUNNERS: weakref.WeakKeyDictionary[nn.Module, GraphedInference] = weakref.WeakKeyDictionary()


def inference_runner(model: nn.Module, autocast_dtype: torch.dtype | None) -> GraphedInference:
    """The model's ``GraphedInference`` for ``autocast_dtype``, kept with the model so its
    graphs serve every validation pass of a run."""
    runner = _RUNNERS.get(model)
    if runner is None or runner.autocast_dtype != autocast_dtype:
        runner = _RUNNERS[model] = GraphedInference(model, autocast_dtype)
    return runner
