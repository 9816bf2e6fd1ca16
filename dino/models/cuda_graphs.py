"""CUDA graphs for the parts of DINO whose shapes are fixed by their inputs' sizes.

A training step of DINO-4scale R50 dispatches about 4,300 kernels, and at batch 4 on an
H200 the host's launches, not the GPU's arithmetic, bound the step (bf16, 800x800: 128 ms
a step, 64 ms of it kernels; ``bench/README.md``). A CUDA graph replays a captured
sequence of kernels with one launch. What qualifies has no host sync and shapes that
follow its inputs' sizes alone:

* ``GraphedEncode`` (training, ``train.cuda_graphs``): ``DINO.encode`` (backbone,
  projections, encoder) forward and backward, one graph pair per input shape.
* ``GraphedDecode`` (training, ``train.cuda_graphs_decoder``): ``DINO.decode_queries``
  (query selection, decoder, class head) forward and backward. The denoising queries'
  count follows the targets, so they are laid out in a fixed number of slots
  (``DINO.denoising_slots``, from the dataset's most boxes in an image); the random
  draws of their layout and the Hungarian matching stay eager.
* ``GraphedInference``: the whole detector at inference, one graph per batch shape;
  validation, ``dino evaluate`` and ``dino inference`` run through it on GPUs
  (``inference_runner``).

Each captures a shape the second time it sees it and at most ``max_graphs`` shapes
(later new shapes run eagerly), so multi-scale shape churn costs a bounded number of
captures; the trainer pads GPU batches to a multiple of 32 pixels, which leaves the smoke
profile 9 shapes an epoch. The training graphs of one part share one memory pool
(``GraphedEncode`` says why that is safe); the two parts have a pool each, because the
encoder's activations must survive the decoder's replays. Captures run in
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
from typing import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dino.models import constants

TRAIN_GRAPHS = 9  # shapes per run: the smoke profile's 3 x 3 heights and widths (multiples of 32)
CAPTURE_MODE = "thread_local"  # other threads' unsafe CUDA calls do not fail our captures

# fn(*inputs) -> (tensor outputs, anything else the caller needs back, e.g. level shapes)
Captured = Callable[..., tuple[tuple[Tensor, ...], object]]


class _Call(nn.Module):
    """An eager method of the detector as a module whose parameters are the detector's,
    so that ``functional_call`` can run it on aliases of them."""

    def __init__(self, detector: nn.Module, fn: Captured):
        super().__init__()
        self.detector, self._fn = detector, fn

    def forward(self, *inputs):
        return self._fn(*inputs)


class _TrainingGraphs:
    """One input signature's forward graph and backward graph of ``fn`` and their static
    buffers: inputs, outputs, the outputs' gradients, the inputs' and the parameters'
    gradients. Inputs may be None (absent; part of the signature). The inputs that
    require a gradient when captured get one; the outputs that require one take one.

    The captures differentiate with respect to aliases of the parameters (views made
    inside the capture), not the parameters themselves: a parameter's gradient
    accumulator outlives the step that made it while the caller still holds that step's
    loss, and PyTorch then syncs the capture with the stream it was made on (the default
    stream), which fails the capture. Measured so on an H200 (bench/README.md)."""

    def __init__(self, fn: Captured, detector: nn.Module, inputs: tuple[Tensor | None, ...], autocast, shared,
                 warmup: int = 2):
        module = _Call(detector, fn)
        pool, side = shared()
        named = [(f"detector.{n}", p) for n, p in detector.named_parameters() if p.requires_grad]
        self.inputs = tuple(None if x is None else x.detach().clone().requires_grad_(x.requires_grad)
                            for x in inputs)
        self.grad_inputs = [i for i, x in enumerate(self.inputs) if x is not None and x.requires_grad]
        wrt_inputs = [self.inputs[i] for i in self.grad_inputs]

        def run():
            aliases = {n: p.view_as(p) for n, p in named}
            with autocast():
                outputs, extra = torch.func.functional_call(module, aliases, self.inputs)
            return tuple(outputs), extra, list(aliases.values())

        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN plans, lazy inits, cached constants
            for _ in range(warmup):
                outputs, _, aliases = run()
                taking = [o for o in outputs if o.requires_grad]
                torch.autograd.grad(taking, aliases + wrt_inputs, [torch.ones_like(o) for o in taking],
                                    allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
            outputs, self.extra, aliases = run()
        self.differentiable = tuple(o.requires_grad for o in outputs)
        taking = [o for o in outputs if o.requires_grad]
        self.grad_outputs = tuple(torch.empty_like(o) for o in taking)
        with torch.cuda.graph(self.backward_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
            grads = torch.autograd.grad(taking, aliases + wrt_inputs, self.grad_outputs, allow_unused=True)
        # detached: the captured autograd graph is not needed after the backward capture
        self.outputs = tuple(o.detach() for o in outputs)
        param_grads, input_grads = grads[:len(named)], grads[len(named):]
        # the parameters fn uses (the other part's get no gradient here) and theirs
        used = [(p, g) for (_, p), g in zip(named, param_grads) if g is not None]
        self.params, self.param_grads = [p for p, _ in used], tuple(g for _, g in used)
        self.input_grads = tuple(input_grads)  # None where fn does not differentiate an input
        # the cached per-shape constants the graphs read stay alive with them (dino.models.constants)
        self._held = constants.snapshot()
        del outputs, taking, aliases, grads, param_grads, input_grads, used
        # the warm-up's blocks stay cached for the side stream, where nothing else allocates
        torch.cuda.empty_cache()


class _Replay(torch.autograd.Function):
    """A captured function as one autograd node: the forward graph's replay, and in
    backward the backward graph's, whose parameter gradients autograd accumulates into
    ``.grad`` and whose input gradients flow on to the inputs' producers."""

    @staticmethod
    def forward(ctx, graphs: _TrainingGraphs, *args):
        for static, value in zip(graphs.inputs, args[:len(graphs.inputs)]):
            if static is not None:
                static.copy_(value)  # (grad mode is off in a Function's forward)
        graphs.forward_graph.replay()
        ctx.graphs = graphs
        outputs = tuple(o.detach() for o in graphs.outputs)
        fixed = [o for o, d in zip(outputs, graphs.differentiable) if not d]
        if fixed:
            ctx.mark_non_differentiable(*fixed)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None):
        graphs = ctx.graphs
        taken = [g for g, d in zip(grads, graphs.differentiable) if d]
        for static, grad in zip(graphs.grad_outputs, taken):
            static.copy_(grad) if grad is not None else static.zero_()
        graphs.backward_graph.replay()
        # views of the static gradient buffers: the next replay rewrites them, so a step
        # consumes them (optimizer.step, then zero_grad(set_to_none=True)) before the next
        inputs: list[Tensor | None] = [None] * len(graphs.inputs)
        for i, grad in zip(graphs.grad_inputs, graphs.input_grads):
            inputs[i] = grad.detach() if grad is not None else None
        return (None, *inputs, *(g.detach() for g in graphs.param_grads))


class _GraphedTraining:
    """What the training graphs of one part share: the capture policy (a shape's second
    sighting, at most ``max_graphs``), one memory pool and warm-up stream, the counts and
    the failure rule. A failed capture raises (the run cannot go on eagerly: CUDA's
    random generator is left in capture mode) and says which setting turns it off.
    ``last_path`` says what the last training call ran (``graph`` or ``eager``),
    ``replays`` counts graphed calls."""

    part = ""  # what is graphed, for messages
    setting = ""  # the setting that turns it off

    def __init__(self, detector: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = TRAIN_GRAPHS,
                 min_seen: int = 2):
        self.detector, self.autocast_dtype = detector, autocast_dtype
        self.max_graphs, self.min_seen = max_graphs, min_seen
        self._graphs: dict[tuple, _TrainingGraphs] = {}
        self._seen: collections.Counter[tuple] = collections.Counter()
        self.disabled = os.environ.get("DINO_CUDA_GRAPHS", "1") == "0"
        self.last_path: str | None = None
        self.replays = 0
        self._pool = self._side = None

    def summary(self, steps: int) -> str:
        """What ``steps`` training steps ran, for the run's log."""
        return (f"{self.setting}: {self.replays} of {steps} steps replayed the {self.part} from CUDA graphs "
                f"({len(self._graphs)} input shapes captured" + (", capture failed" if self.disabled else "") + ")")

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def _shared(self):
        """The memory pool and the warm-up stream every shape's capture uses (made at the first)."""
        if self._pool is None:
            self._pool, self._side = torch.cuda.graph_pool_handle(), torch.cuda.Stream()
        return self._pool, self._side

    def _active(self, tensor: Tensor) -> bool:
        return self.detector.training and torch.is_grad_enabled() and tensor.is_cuda

    def _entry(self, key: tuple, fn: Captured, inputs: tuple[Tensor | None, ...]) -> _TrainingGraphs | None:
        entry = self._graphs.get(key)
        if entry is not None or self.disabled:
            return entry
        self._seen[key] += 1
        if self._seen[key] < self.min_seen or len(self._graphs) >= self.max_graphs:
            return None
        try:
            entry = self._graphs[key] = _TrainingGraphs(fn, self.detector, inputs, self._autocast, self._shared)
        except Exception as exc:
            # not a fallback: a failed capture leaves CUDA's random generator in capture
            # mode, so the next random draw (the denoising queries') fails obscurely
            self.disabled = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RuntimeError(f"CUDA graph capture of the {self.part} in training failed ({type(exc).__name__}: "
                               f"{first}); set {self.setting}=false to train without these CUDA graphs") from exc
        return entry

    def _replay(self, entry: _TrainingGraphs | None, inputs: tuple[Tensor | None, ...]) -> tuple[Tensor, ...] | None:
        """The entry's outputs for ``inputs`` (None: no entry, run eagerly)."""
        self.last_path = "eager" if entry is None else "graph"
        if entry is None:
            return None
        self.replays += 1
        return _Replay.apply(entry, *inputs, *entry.params)


def _signature(tensors: tuple[Tensor | None, ...]) -> tuple:
    """What a capture depends on besides the values: shapes, dtypes, devices, which
    tensors are absent and which carry a gradient."""
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in tensors)


class GraphedEncode(_GraphedTraining):
    """Replaces ``detector.encode`` by CUDA-graph replays in training mode.

    ``install()`` swaps the method in; eval-mode calls (validation), calls with grad
    disabled and calls off the GPU run the eager path, as do shapes beyond
    ``max_graphs``.

    Every shape's graphs share one memory pool, so the graph memory of a run is about
    that of its largest shape, not the sum over shapes (9 private pools, each beside its
    warm-up's cache, reserved 74-80 GB in a smoke trial on an H200). Sharing is safe
    because a step runs one shape's forward replay, then its backward replay, then
    consumes the outputs and the parameter gradients (``optimizer.step``) before the
    next step's forward replays any shape: no graph's buffers need to outlive another
    graph's replay. The outputs are static buffers: a training step consumes them
    before the next one starts (no gradient accumulation over steps).
    """

    part = "backbone and encoder"
    setting = "train.cuda_graphs"

    def __init__(self, detector: nn.Module, autocast_dtype: torch.dtype | None, max_graphs: int = TRAIN_GRAPHS,
                 min_seen: int = 2):
        super().__init__(detector, autocast_dtype, max_graphs, min_seen)
        self._eager = detector.encode

    def install(self) -> GraphedEncode:
        self.detector.encode = self
        return self

    def _fn(self, images: Tensor, masks: Tensor):
        # memory [B, S, C] carries the gradient; mask [B, S] and valid_ratios [B, L, 2]
        # are functions of the input masks alone; the level shapes come back as they are
        memory, mask, valid_ratios, shapes = self._eager(images, masks)
        return (memory, mask, valid_ratios), shapes

    def __call__(self, images: Tensor, masks: Tensor):
        if not self._active(images):
            return self._eager(images, masks)
        inputs = (images, masks)
        entry = self._entry(_signature(inputs), self._fn, inputs)
        outputs = self._replay(entry, inputs)
        if outputs is None:
            return self._eager(images, masks)
        return (*outputs, entry.extra)


class GraphedDecode(_GraphedTraining):
    """Replaces ``detector.decode_queries`` (query selection, decoder, class head) by
    CUDA-graph replays in training mode, and lays the denoising queries out in
    ``slots`` (``DINO.denoising_slots``) so that their count does not follow the
    targets. A batch whose layout needs more slots, or has no box, is another signature:
    captured if it repeats, within ``max_graphs``.

    Its graphs have a pool of their own: the encoder's forward activations, read by the
    encoder's backward replay, must outlive this part's replays, which a shared pool
    could place in the same memory. Within this pool the argument of ``GraphedEncode``
    holds: a step runs one signature's forward and backward replays before the next."""

    part = "query selection and decoder"
    setting = "train.cuda_graphs_decoder"

    def __init__(self, detector: nn.Module, autocast_dtype: torch.dtype | None, slots: int | None,
                 max_graphs: int = TRAIN_GRAPHS, min_seen: int = 2):
        super().__init__(detector, autocast_dtype, max_graphs, min_seen)
        self.slots = slots
        self._eager = detector.decode_queries

    def install(self) -> GraphedDecode:
        self.detector.decode_queries = self
        self.detector.denoising_slots = self.slots
        return self

    def __call__(self, memory: Tensor, mask: Tensor, valid_ratios: Tensor, shapes: list[tuple[int, int]],
                 dn_tgt: Tensor | None = None, dn_ref: Tensor | None = None, attn_mask: Tensor | None = None):
        if not self._active(memory):
            return self._eager(memory, mask, valid_ratios, shapes, dn_tgt, dn_ref, attn_mask)
        inputs = (memory, mask, valid_ratios, dn_tgt, dn_ref, attn_mask)
        levels = tuple((int(h), int(w)) for h, w in shapes)

        def fn(memory, mask, valid_ratios, dn_tgt, dn_ref, attn_mask):
            return self._eager(memory, mask, valid_ratios, list(levels), dn_tgt, dn_ref, attn_mask), None

        outputs = self._replay(self._entry((levels, *_signature(inputs)), fn, inputs), inputs)
        if outputs is None:
            return self._eager(memory, mask, valid_ratios, shapes, dn_tgt, dn_ref, attn_mask)
        return outputs


def training_graphs(model: nn.Module) -> list[_GraphedTraining]:
    """The training graphs installed on ``model``: encoder first, then decoder (empty:
    training runs eagerly)."""
    parts = (getattr(model, "encode", None), getattr(model, "decode_queries", None))
    return [p for p in parts if isinstance(p, _GraphedTraining)]


def training_path(model: nn.Module) -> str:
    """What ``model``'s last training step ran: ``graph`` (backbone and encoder from CUDA
    graphs), ``graph+decoder`` (the query selection and decoder too) or ``eager`` (speed
    rows name this, read after the timed steps)."""
    encode, decode = getattr(model, "encode", None), getattr(model, "decode_queries", None)
    encoded = isinstance(encode, GraphedEncode) and encode.last_path == "graph"
    decoded = isinstance(decode, GraphedDecode) and decode.last_path == "graph"
    if encoded:
        return "graph+decoder" if decoded else "graph"
    return "decoder graph" if decoded else "eager"


def install_training_graphs(model: nn.Module, device: torch.device, autocast_dtype: torch.dtype | None, *,
                            enabled: bool = True, decoder: bool = False, max_boxes: int = 0,
                            distributed: bool = False, compiled: bool = False) -> tuple[list[_GraphedTraining], str]:
    """The trainer's rule for ``train.cuda_graphs`` and ``train.cuda_graphs_decoder``
    (``bench/model_speed.py`` applies the same): graphs on one GPU, eager otherwise;
    ``enabled`` false turns every training graph off, ``decoder`` adds the decoder's.
    ``max_boxes``: the most boxes an image of the training set has, which sizes the
    decoder's denoising slots. Returns the installed graphs (empty: eager) and why, for
    the run's log."""
    if not enabled:
        return [], "train.cuda_graphs is false: training runs eagerly"
    if device.type != "cuda":
        return [], "training runs eagerly (CUDA graphs need a GPU)"
    if distributed:  # DDP's gradient hooks fire per parameter during backward, not inside a replay
        return [], "training runs eagerly under DDP (train.cuda_graphs applies to one GPU)"
    if compiled:
        return [], "train.compile is on: torch.compile's graphs instead of train.cuda_graphs"
    graphs: list[_GraphedTraining] = [GraphedEncode(model, autocast_dtype).install()]
    notes = [f"train.cuda_graphs: backbone and encoder replayed from CUDA graphs in training, up to "
             f"{graphs[0].max_graphs} input shapes, each captured the second time it comes"]
    if decoder:
        denoising = getattr(model, "denoising", None)
        slots = denoising.slots_for(max_boxes) if denoising is not None else None
        graphs.append(GraphedDecode(model, autocast_dtype, slots).install())
        notes.append("train.cuda_graphs_decoder: query selection and decoder replayed from CUDA graphs in training"
                     + (f", the denoising queries in {slots} slots (dn_number {denoising.dn_number}, at most "
                        f"{max_boxes} boxes an image)" if slots is not None else ""))
    return graphs, "; ".join(notes)


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
