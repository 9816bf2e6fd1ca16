"""``dino export``: a trained checkpoint -> an ONNX file for deployment (TensorRT, ONNX Runtime).

The graph is the detector at inference: one input ``inputs [B, 3, H, W]`` (an RGB image
already resized to ``export.input_height`` x ``input_width`` and normalised with the
dataset's ``input_mean`` / ``input_std``; every pixel valid, no padding mask) and two
outputs of the last decoder layer, as TAO's DINO export:

    pred_logits [B, Q, K]   class logits (sigmoid gives the scores; no softmax)
    pred_boxes  [B, Q, 4]   sigmoid (cx, cy, w, h) relative to the input image

Denoising queries, auxiliary and encoder-proposal outputs are training-only and left out.
The input size is fixed (spatial shapes are constants of the traced graph); the batch
axis is dynamic when ``export.batch_size`` is -1 (TAO), else fixed. With
``export.verify`` (ours, default on) the file is run by ONNX Runtime on a random input
and compared with PyTorch before it is moved into place, so a file at ``onnx_file``
always reproduces the checkpoint (up to the order of near-tied encoder proposals, which
``compare_with_onnxruntime`` explains). Writes ``<export dir>/status.json`` like ``train``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

import torch
from torch import Tensor, nn

from dino.checkpoint import checkpoint_for, load_checkpoint, model_state, task_dir_of
from dino.config import Spec, SpecError
from dino.config.export_config import UNSET, ExportConfig
from dino.runtime import SignalGuard, log
from dino.status_log import StatusLog

INPUT_NAME = "inputs"
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
MIN_OPSET = 16  # grid_sample, used by the deformable attention
MAX_OPSET = 20  # the newest opset of torch's TorchScript-based exporter
# ONNX Runtime vs PyTorch (float32, CPU): measured differences are ~1e-6.
BOX_ATOL = SCORE_ATOL = 1e-3
VERIFY_SEED = 0


class InferenceGraph(nn.Module):
    """The detector as deployed: a batch of normalised images in, last-layer predictions out.

    The padding mask the detector takes is all False (fixed-size input, nothing padded),
    built inside the graph so the ONNX file has a single input.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        # Eval mode for the whole tree: the exporter restores the wrapper's mode recursively
        # afterwards, so a wrapper left in training mode would put batch norms back into it.
        self.eval()

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``inputs [B, 3, H, W]`` -> ``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]``."""
        mask = torch.zeros_like(inputs[:, 0], dtype=torch.bool)  # [B, H, W]
        out = self.detector(inputs, mask)
        return out["pred_logits"], out["pred_boxes"]


def export_dir_of(spec: Spec) -> str:
    return task_dir_of(spec, "export", spec.export.results_dir)


def checkpoint_to_export(spec: Spec) -> str:
    return checkpoint_for(spec, "export", spec.export.checkpoint)


def onnx_path_of(spec: Spec, checkpoint: str) -> str:
    """``export.onnx_file``, or ``<export dir>/<checkpoint name>.onnx`` when unset."""
    if spec.export.onnx_file not in UNSET:
        return spec.export.onnx_file
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(export_dir_of(spec), stem + ".onnx")


def check_export_config(cfg: ExportConfig) -> None:
    """SpecError naming the first ``export.*`` value that cannot be exported."""
    if cfg.format.lower() != "onnx":
        raise SpecError(f"export.format={cfg.format!r}: only 'onnx' is supported")
    if cfg.input_channel != 3:
        raise SpecError(f"export.input_channel={cfg.input_channel}: the ResNet backbone takes 3 (RGB) channels")
    for name in ("input_width", "input_height"):
        if getattr(cfg, name) < 32:
            raise SpecError(f"export.{name}={getattr(cfg, name)} must be >= 32")
    if not MIN_OPSET <= cfg.opset_version <= MAX_OPSET:
        raise SpecError(f"export.opset_version={cfg.opset_version} must be in {MIN_OPSET}..{MAX_OPSET} "
                        f"(grid_sample in the deformable attention needs opset {MIN_OPSET})")
    if cfg.batch_size == 0 or cfg.batch_size < -1:
        raise SpecError(f"export.batch_size={cfg.batch_size} must be -1 (dynamic batch) or >= 1")


def load_detector(spec: Spec, checkpoint: str) -> nn.Module:
    """The spec's model with the checkpoint's weights, in eval mode on the CPU."""
    from dino.models import build_dino

    try:
        model, _, _ = build_dino(spec.model, spec.dataset.num_classes)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        ckpt = load_checkpoint(checkpoint)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        model.load_state_dict(model_state(ckpt))
    except RuntimeError as exc:
        hint = ""
        if ckpt.get("num_classes") not in (None, spec.dataset.num_classes):
            hint = f"; it was trained with dataset.num_classes={ckpt['num_classes']}"
        raise SpecError(f"checkpoint {checkpoint} does not fit this spec's model{hint}; export with the spec "
                        f"it was trained with ({str(exc).splitlines()[0]})") from None
    return model.eval()


def export_onnx(graph: InferenceGraph, example: Tensor, path: str, cfg: ExportConfig) -> None:
    """Trace ``graph`` on ``example [B, 3, H, W]`` into ``path`` (TorchScript-based exporter)."""
    graph.eval()
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if cfg.batch_size == -1 else None
    with warnings.catch_warnings(), torch.no_grad():
        # Shape-derived Python values (feature-map sizes) become constants: intended, the
        # input size is fixed. The exporter's own deprecation notice is not the user's concern.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay ops
        torch.onnx.export(graph, (example,), path, dynamo=False, opset_version=cfg.opset_version,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                          verbose=cfg.verbose)


def name_output_shapes(path: str, batch: int | str, num_queries: int, num_classes: int) -> None:
    """Write the outputs' full shapes into the file (``[batch, Q, K]``, ``[batch, Q, 4]``):
    with a dynamic batch the tracer leaves Q, K and 4 unnamed, and deployment tools read them."""
    import onnx

    model = onnx.load(path)
    for output, last in zip(model.graph.output, (num_classes, 4)):
        dims = output.type.tensor_type.shape.dim
        while len(dims) < 3:
            dims.add()
        for dim, value in zip(dims, (batch, num_queries, last)):
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    onnx.save(model, path)


# Proposal scores (logits) may differ by this much between ONNX Runtime and PyTorch.
PROPOSAL_SCORE_ATOL = 1e-3


@contextlib.contextmanager
def pinned_selection(selection: nn.Module, indices: Tensor | None) -> Iterator[dict[str, Tensor]]:
    """Within the block, ``selection`` (the model's ``QuerySelection``) ranks proposals by
    ``indices [B, Q]`` instead of its own top-k (None: its own); the dict it yields gets
    the ``scores [B, S]`` it was asked to rank."""
    seen: dict[str, Tensor] = {}
    own = selection.rank

    def rank(scores: Tensor) -> Tensor:
        seen["scores"] = scores
        return own(scores) if indices is None else indices

    selection.rank = rank
    try:
        yield seen
    finally:
        del selection.rank  # back to the method


def _with_selection_outputs(path: str) -> tuple[bytes, list[str]]:
    """The ONNX file with the encoder selection's TopK scores and indices as two more
    outputs (the same graph, nothing recomputed), and those outputs' names; the file
    unchanged and no names when it has not exactly one TopK."""
    import onnx

    model = onnx.load(path)
    topk = [node for node in model.graph.node if node.op_type == "TopK"]
    if len(topk) != 1:
        return model.SerializeToString(), []
    scores, indices = topk[0].input[0], topk[0].output[1]
    model.graph.output.extend([onnx.helper.make_tensor_value_info(scores, onnx.TensorProto.FLOAT, None),
                               onnx.helper.make_tensor_value_info(indices, onnx.TensorProto.INT64, None)])
    return model.SerializeToString(), [scores, indices]


def compare_with_onnxruntime(path: str, graph: InferenceGraph, inputs: Tensor) -> dict[str, float]:
    """Max absolute differences ONNX Runtime (CPU) vs PyTorch on ``inputs``.

    Two-stage query selection ranks the encoder's proposals with a top-k, and proposals
    whose scores differ by rounding may come out in either order; each rank seeds its own
    decoder query, so a rounding-level difference can change whole boxes (1e-6 relative
    noise on the encoder output moved boxes by 0.2 on a ResNet-18 DINO, random weights).
    So PyTorch runs with ONNX Runtime's selection (read from the same graph), the outputs
    are compared under it, and the selection itself is checked: ONNX Runtime's proposal
    scores within ``PROPOSAL_SCORE_ATOL`` of PyTorch's, and its choice at every rank
    within twice that difference of PyTorch's own (a reordering of near-ties only).

    Returns ``boxes``, ``scores`` (sigmoid), ``logits``, ``proposal_scores`` (max
    differences), ``selection_gap`` (PyTorch's score of its own choice minus that of ONNX
    Runtime's, worst rank) and ``reordered`` (ranks where the two choices differ).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("export.verify needs onnxruntime: pip install onnxruntime, or set export.verify=false") from None

    model_bytes, extra = _with_selection_outputs(path)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    results = session.run([*OUTPUT_NAMES, *extra], {INPUT_NAME: inputs.numpy()})
    ort_logits, ort_boxes = torch.from_numpy(results[0]), torch.from_numpy(results[1])
    indices = torch.from_numpy(results[3]) if extra else None
    with torch.no_grad(), pinned_selection(graph.detector.query_selection, indices) as seen:
        logits, boxes = graph(inputs)
    if ort_logits.shape != logits.shape or ort_boxes.shape != boxes.shape:
        raise RuntimeError(f"ONNX Runtime output shapes {tuple(ort_logits.shape)}, {tuple(ort_boxes.shape)} differ "
                           f"from PyTorch's {tuple(logits.shape)}, {tuple(boxes.shape)}")
    diff = {
        "boxes": (ort_boxes - boxes).abs().max().item(),
        "scores": (ort_logits.sigmoid() - logits.sigmoid()).abs().max().item(),
        "logits": (ort_logits - logits).abs().max().item(),
        "proposal_scores": 0.0, "selection_gap": 0.0, "reordered": 0,
    }
    if extra:
        scores, ort_scores = seen["scores"], torch.from_numpy(results[2]).view_as(seen["scores"])
        finite = torch.isfinite(scores)
        if not torch.equal(finite, torch.isfinite(ort_scores)):
            raise RuntimeError("ONNX Runtime and PyTorch disagree on which proposals are selectable")
        own = scores.topk(indices.shape[1], dim=1)
        diff["proposal_scores"] = (ort_scores - scores)[finite].abs().max().item()
        gap = (own.values - scores.gather(1, indices)).nan_to_num(0.0)  # -inf - -inf: both unselectable
        diff["selection_gap"] = gap.max().item()
        diff["reordered"] = int((own.indices != indices).sum())
    return diff


def verification_problem(diff: dict[str, float]) -> str | None:
    """What is wrong with ``compare_with_onnxruntime``'s differences, or None."""
    if diff["boxes"] > BOX_ATOL or diff["scores"] > SCORE_ATOL:
        return f"outputs differ beyond {BOX_ATOL:g}"
    if diff["proposal_scores"] > PROPOSAL_SCORE_ATOL:
        return f"encoder proposal scores differ beyond {PROPOSAL_SCORE_ATOL:g}"
    if diff["selection_gap"] > 2 * diff["proposal_scores"] + 1e-6:
        return (f"ONNX Runtime selects proposals PyTorch ranks {diff['selection_gap']:.2e} lower, more than the "
                "scores' own difference explains")
    return None


def run_export(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    """Export per ``spec.export``; SpecError for bad input, Interrupted on SIGTERM."""
    with SignalGuard():
        return _export(spec, ignored, status)


def _export(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    cfg = spec.export
    if ignored:
        text = "Ignored spec fields (accepted, not used by this trainer): " + "; ".join(ignored)
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")
    check_export_config(cfg)
    checkpoint = checkpoint_to_export(spec)
    onnx_file = onnx_path_of(spec, checkpoint)
    if os.path.isdir(onnx_file):
        raise SpecError(f"export.onnx_file {onnx_file} is a folder: give a file name (model.onnx)")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(onnx_file)), exist_ok=True)
    except OSError as exc:
        raise SpecError(f"export.onnx_file {onnx_file}: cannot create its folder ({exc.strerror})") from None

    graph = InferenceGraph(load_detector(spec, checkpoint))
    trace_batch = 1 if cfg.batch_size == -1 else cfg.batch_size
    shape = (trace_batch, cfg.input_channel, cfg.input_height, cfg.input_width)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(VERIFY_SEED))
    try:
        with torch.no_grad():
            graph(example)  # fails early, with the model's message, on an input too small for the queries
    except ValueError as exc:
        raise SpecError(f"export.input_height x input_width = {cfg.input_height} x {cfg.input_width}: {exc}") from None

    batch_text = "dynamic batch" if cfg.batch_size == -1 else f"batch {cfg.batch_size}"
    status.write(f"Exporting {checkpoint} to {onnx_file}: input {INPUT_NAME} [{batch_text}, {cfg.input_channel}, "
                 f"{cfg.input_height}, {cfg.input_width}], opset {cfg.opset_version}")
    tmp = f"{onnx_file}.tmp{os.getpid()}"
    try:
        export_onnx(graph, example, tmp, cfg)
        name_output_shapes(tmp, "batch" if cfg.batch_size == -1 else cfg.batch_size, graph.detector.num_queries,
                           spec.dataset.num_classes)
        import onnx

        onnx.checker.check_model(tmp, full_check=True)
        result = {"onnx_file": onnx_file, "checkpoint": checkpoint, "size_bytes": os.path.getsize(tmp),
                  "input_shape": [-1 if cfg.batch_size == -1 else trace_batch, *shape[1:]]}
        if cfg.verify:
            # a batch of 2 also exercises the dynamic batch axis
            check = example if cfg.batch_size != -1 else torch.randn(
                (2, *shape[1:]), generator=torch.Generator().manual_seed(VERIFY_SEED + 1))
            diff = compare_with_onnxruntime(tmp, graph, check)
            result["max_abs_diff"] = diff
            text = (f"ONNX Runtime vs PyTorch on a random batch of {check.shape[0]}: max |diff| boxes "
                    f"{diff['boxes']:.2e}, sigmoid scores {diff['scores']:.2e}, logits {diff['logits']:.2e}, "
                    f"proposal scores {diff['proposal_scores']:.2e}; near-tied proposals ranked in another order: "
                    f"{diff['reordered']}")
            log(text)
            problem = verification_problem(diff)
            if problem:
                raise RuntimeError(f"the ONNX graph does not reproduce the PyTorch model: {problem} ({text}); "
                                   f"nothing was written to {onnx_file} (export.verify=false writes it unchecked)")
            status.write(text, max_abs_diff=diff)
        os.replace(tmp, onnx_file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log(f"ONNX file : {onnx_file} ({result['size_bytes']} bytes)")
    status.write(f"ONNX file written: {onnx_file}", onnx_file=onnx_file, size_bytes=result["size_bytes"])
    return result
