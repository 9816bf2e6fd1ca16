"""CUDA graphs for the parts of DINO whose shapes are fixed by the input size.

A training step of DINO-4scale R50 dispatches about 4,300 kernels, and at batch 4 on an
H200 the host's launches, not the GPU's arithmetic, bound the step (bf16, 800x800: 128 ms
a step, 64 ms of it kernels; ``bench/README.md``). A CUDA graph replays a captured
sequence of kernels with one launch. Two parts qualify, because nothing in them depends
on the data (no host sync, shapes fixed by the image size):

* ``GraphedEncode`` (training, ``train.cuda_graphs``): ``DINO.encode`` (backbone,
  projections, encoder) forward and backward, one graph pair per input shape. The
  decoder and the loss stay eager: the denoising queries' count and the Hungarian
  matching depend on the targets.
* ``GraphedInference``: the whole detector at inference, one graph per batch shape;
  validation, ``dino evaluate`` and ``dino inference`` run through it on GPUs
  (``inference_runner``).

Both capture a shape the second time they see it and at most ``max_graphs`` shapes
(later new shapes run eagerly), so multi-scale shape churn costs a bounded number of
captures; the trainer pads GPU batches to a multiple of 32
pixels, which leaves the smoke profile 9 shapes an epoch; the training graphs of all
shapes share one memory pool (``GraphedEncode`` says why that is safe). Captures run in
``thread_local`` mode: the data loader's pin-memory thread allocates pinned host memory
meanwhile, which the default (global) mode turns into a failed capture. Under autocast,
the autocast weight cache is off inside a capture and its replays' eager twin
(``cache_enabled=False``): a cast cached inside a capture would live in the graph's pool.
"""

from __future__ import annotations

import collections
import os
import warnings
import weakref

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dino.models import constants

TRAIN_GRAPHS = 9  # shapes per run: the smoke profile's 3 x 3 heights and widths (multiples of 32)
CAPTURE_MODE = "thread_local"  # other threads' unsafe CUDA calls do not fail our captures


class _Encode(nn.Module):
    """The eager ``DINO.encode`` as a module whose parameters are the detector's, so that
    ``functional_call`` can run it on aliases of them."""

    def __init__(self, detector: nn.Module, eager):
        super().__init__()
        self.detector, self._eager = detector, eager

    def forward(self, images: Tensor, masks: Tensor):
        return self._eager(images, masks)


class _EncodeGraphs:
    """One input shape's forward graph and backward graph of ``encode`` and their static
    buffers (inputs, outputs, output gradient, parameter gradients).

    The captures differentiate with respect to aliases of the parameters (views made
    inside the capture), not the parameters themselves: a parameter's gradient
    accumulator outlives the step that made it while the caller still holds that step's
    loss, and PyTorch then syncs the capture with the stream it was made on (the default
    stream), which fails the capture. Measured so on an H200 (bench/README.md)."""

    def __init__(self, encode, detector: nn.Module, images: Tensor, masks: Tensor, autocast, shared,
                 warmup: int = 2):
        module = _Encode(detector, encode)
        pool, side = shared()
        named = [(f"detector.{n}", p) for n, p in detector.named_parameters() if p.requires_grad]

        def run(inputs: tuple[Tensor, Tensor]):
            aliases = {n: p.view_as(p) for n, p in named}
            with autocast():
                out = torch.func.functional_call(module, aliases, inputs)
            return out, list(aliases.values())

        self.inputs = (images.clone(), masks.clone())
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN plans, lazy inits, cached constants
            for _ in range(warmup):
                (memory, *_), aliases = run(self.inputs)
                torch.autograd.grad(memory, aliases, torch.ones_like(memory), allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
            (memory, mask, valid_ratios, self.shapes), aliases = run(self.inputs)
        self.grad_memory = torch.empty_like(memory)
        with torch.cuda.graph(self.backward_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
            grads = torch.autograd.grad(memory, aliases, self.grad_memory, allow_unused=True)
        # memory [B, S, C] carries the gradient; mask [B, S] and valid_ratios [B, L, 2]
        # are functions of the input masks alone. Detached: the captured autograd graph is
        # not needed after the backward capture.
        self.outputs = (memory.detach(), mask, valid_ratios.detach())
        # the parameters encode uses (the decoder's get no gradient here) and theirs
        used = [(p, g) for (_, p), g in zip(named, grads) if g is not None]
        self.params, self.grads = [p for p, _ in used], tuple(g for _, g in used)
        # the cached per-shape constants the graphs read stay alive with them (dino.models.constants)
        self._held = constants.snapshot()
        del memory, mask, valid_ratios, aliases, grads, used
        # the warm-up's blocks stay cached for the side stream, where nothing else allocates
        torch.cuda.empty_cache()


class _Replay(torch.autograd.Function):
    """``encode`` as one autograd node: the forward graph's replay, and in backward the
    backward graph's, whose parameter gradients autograd accumulates into ``.grad``."""

    @staticmethod
    def forward(ctx, graphs: _EncodeGraphs, images: Tensor, masks: Tensor, *params: Tensor):
        graphs.inputs[0].copy_(images)
        graphs.inputs[1].copy_(masks)
        graphs.forward_graph.replay()
        ctx.graphs = graphs
        memory, mask, valid_ratios = (o.detach() for o in graphs.outputs)
        ctx.mark_non_differentiable(mask, valid_ratios)
        return memory, mask, valid_ratios

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_memory: Tensor | None, *_):
        graphs = ctx.graphs
        graphs.grad_memory.copy_(grad_memory) if grad_memory is not None else graphs.grad_memory.zero_()
        graphs.backward_graph.replay()
        # views of the static gradient buffers: the next replay rewrites them, so a step
        # consumes them (optimizer.step, then zero_grad(set_to_none=True)) before the next
        return (None, None, None, *(g.detach() for g in graphs.grads))


class GraphedEncode:
    """Replaces ``detector.encode`` by CUDA-graph replays in training mode.

    ``install()`` swaps the method in; eval-mode calls (validation), calls with grad
    disabled and calls off the GPU run the eager path, as do shapes beyond
    ``max_graphs``. A failed capture raises (the run cannot go on eagerly: CUDA's random
    generator is left in capture mode) and says to set ``train.cuda_graphs=false``. ``last_path``
    says what the last training call ran (``graph`` or ``eager``), ``replays`` counts
    graphed calls.

    Every shape's graphs share one memory pool, so the graph memory of a run is about
    that of its largest shape, not the sum over shapes (9 private pools, each beside its
    warm-up's cache, reserved 74-80 GB in a smoke trial on an H200). Sharing is safe
    because a step runs one shape's forward replay, then its backward replay, then
    consumes the outputs and the parameter gradients (``optimizer.step``) before the
    next step's forward replays any shape: no graph's buffers need to outlive another
    graph's replay. The outputs are static buffers: a training step consumes them
    before the next one starts (no gradient accumulation over steps).
    """

    def __init__(self, detector: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = TRAIN_GRAPHS,
                 min_seen: int = 2):
        self.detector, self.autocast_dtype = detector, autocast_dtype
        self.max_graphs, self.min_seen = max_graphs, min_seen
        self._eager = detector.encode
        self._graphs: dict[tuple, _EncodeGraphs] = {}
        self._seen: collections.Counter[tuple] = collections.Counter()
        self.disabled = os.environ.get("DINO_CUDA_GRAPHS", "1") == "0"
        self.last_path: str | None = None
        self.replays = 0
        self._pool = self._side = None  # one memory pool and one warm-up stream for every shape

    def install(self) -> GraphedEncode:
        self.detector.encode = self
        return self

    def summary(self, steps: int) -> str:
        """What ``steps`` training steps ran, for the run's log."""
        return (f"train.cuda_graphs: {self.replays} of {steps} steps replayed the backbone and encoder from CUDA "
                f"graphs ({len(self._graphs)} input shapes captured" + (", capture failed" if self.disabled else "")
                + ")")

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def _shared(self):
        """The memory pool and the warm-up stream every shape's capture uses (made at the first)."""
        if self._pool is None:
            self._pool, self._side = torch.cuda.graph_pool_handle(), torch.cuda.Stream()
        return self._pool, self._side

    def _entry(self, images: Tensor, masks: Tensor) -> _EncodeGraphs | None:
        key = (tuple(images.shape), tuple(masks.shape), images.dtype, images.device)
        entry = self._graphs.get(key)
        if entry is not None or self.disabled:
            return entry
        self._seen[key] += 1
        if self._seen[key] < self.min_seen or len(self._graphs) >= self.max_graphs:
            return None
        try:
            entry = self._graphs[key] = _EncodeGraphs(self._eager, self.detector, images, masks, self._autocast,
                                                      self._shared)
        except Exception as exc:
            # not a fallback: a failed capture leaves CUDA's random generator in capture
            # mode, so the next random draw (the denoising queries') fails obscurely
            self.disabled = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RuntimeError(f"CUDA graph capture of the encoder in training failed ({type(exc).__name__}: "
                               f"{first}); set train.cuda_graphs=false to train without CUDA graphs") from exc
        return entry

    def __call__(self, images: Tensor, masks: Tensor):
        if not (self.detector.training and torch.is_grad_enabled() and images.is_cuda):
            return self._eager(images, masks)
        entry = self._entry(images, masks)
        if entry is None:
            self.last_path = "eager"
            return self._eager(images, masks)
        self.last_path = "graph"
        self.replays += 1
        memory, mask, valid_ratios = _Replay.apply(entry, images, masks, *entry.params)
        return memory, mask, valid_ratios, entry.shapes


def training_graphs(model: nn.Module) -> GraphedEncode | None:
    """The ``GraphedEncode`` installed on ``model`` (None: training runs eagerly)."""
    encode = getattr(model, "encode", None)
    return encode if isinstance(encode, GraphedEncode) else None


def training_path(model: nn.Module) -> str:
    """What ``model``'s last training step ran for its backbone and encoder: ``graph`` or
    ``eager`` (speed rows name this, read after the timed steps)."""
    graphs = training_graphs(model)
    return (graphs.last_path or "eager") if graphs is not None else "eager"


def install_training_graphs(model: nn.Module, device: torch.device, autocast_dtype: torch.dtype | None, *,
                            enabled: bool = True, distributed: bool = False,
                            compiled: bool = False) -> tuple[GraphedEncode | None, str]:
    """The trainer's rule for ``train.cuda_graphs`` (``bench/model_speed.py`` applies the
    same): graphs of ``encode`` on one GPU, eager otherwise. Returns the installed
    ``GraphedEncode`` (None: eager) and why, for the run's log."""
    if not enabled:
        return None, "train.cuda_graphs is false: training runs eagerly"
    if device.type != "cuda":
        return None, "training runs eagerly (CUDA graphs need a GPU)"
    if distributed:  # DDP's gradient hooks fire per parameter during backward, not inside a replay
        return None, "training runs eagerly under DDP (train.cuda_graphs applies to one GPU)"
    if compiled:
        return None, "train.compile is on: torch.compile's graphs instead of train.cuda_graphs"
    graphs = GraphedEncode(model, autocast_dtype).install()
    return graphs, (f"train.cuda_graphs: backbone and encoder replayed from CUDA graphs in training, up to "
                    f"{graphs.max_graphs} input shapes, each captured the second time it comes")


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
        # thread_local (CAPTURE_MODE): under the default (global) mode the pin-memory
        # thread's allocation failed the capture (cudaErrorStreamCaptureUnsupported: every
        # `dino evaluate` and `dino inference` on an H200 did, their first batches' pinned
        # buffers not yet cached)
        with torch.cuda.graph(graph, capture_error_mode=CAPTURE_MODE), self._autocast(cache=False):
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
