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
* ``GraphedInference``: the whole detector at inference, one graph per input shape.

Both keep at most ``max_graphs`` shapes (the oldest is dropped): multi-scale training
should pad batches to a few fixed sizes (``dataset.augmentation.fixed_padding``). Under
autocast, the autocast weight cache must be off (``torch.autocast(...,
cache_enabled=False)``), as for any graph capture.
"""

from __future__ import annotations

import collections

import torch
from torch import Tensor, nn


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
            entry = self._graphs[key] = (graphed, shapes)
        graphed, shapes = entry
        self._graphs.move_to_end(key)
        with self._autocast():
            memory, mask, valid_ratios = graphed(images, masks)
        return memory, mask, valid_ratios, shapes


class GraphedInference:
    """``model(images, masks)`` at inference, replayed from one CUDA graph per shape.

    Returns the detector's output dict; its tensors are static buffers rewritten by the
    next call with the same shape, so consume (or copy) them first.
    """

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = 3):
        self.model, self.autocast_dtype, self.max_graphs = model, autocast_dtype, max_graphs
        self._graphs: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()

    def _forward(self, images: Tensor, masks: Tensor) -> dict:
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self.model(images, masks)

    @torch.no_grad()
    def __call__(self, images: Tensor, masks: Tensor) -> dict:
        key = (tuple(images.shape), tuple(masks.shape), images.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            static_images, static_masks = images.clone(), masks.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: first-use checks and cached constants
                for _ in range(2):
                    self._forward(static_images, static_masks)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(static_images, static_masks)
            if len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            entry = self._graphs[key] = (graph, static_images, static_masks, out)
        graph, static_images, static_masks, out = entry
        self._graphs.move_to_end(key)
        static_images.copy_(images)
        static_masks.copy_(masks)
        graph.replay()
        return out
