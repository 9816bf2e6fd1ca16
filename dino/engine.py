"""One training epoch and one evaluation pass (COCO mAP + loss), nothing else.

Batches are ``(images Float[B, 3, H, W], masks Bool[B, H, W], targets)`` from
:func:`dino.data.collate`; targets carry ``labels Long[n]`` and ``boxes Float[n, 4]``
(cxcywh, relative to the unpadded image) for the criterion and ``orig_size`` (h, w)
for rescaling detections to the annotation file's pixels.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from typing import Any, Callable

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

try:  # pycocotools' algorithm in C++: the same numbers (tests/trainer/test_coco_eval.py), 3-4x faster
    from faster_coco_eval import COCOeval_faster as _FasterCOCOeval
    from faster_coco_eval import __version__ as _faster_version
except ImportError:  # not installed (a container built without it): pycocotools' own
    _FasterCOCOeval, _faster_version = None, None

# Which COCOeval scores validation: 120 smoke images with 300 detections each took
# pycocotools 1.0-1.3 s on a 2-core CPU, up to 2.2 s beside packed trials on the H200
# host, while a trial alone on its GPU waited; faster-coco-eval 0.30-0.35 s.
COCO_EVALUATOR = f"faster-coco-eval {_faster_version}" if _FasterCOCOeval is not None else "pycocotools"

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def inference_forward(model, device: torch.device, precision: str) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """``(images, masks) -> outputs`` of ``model`` in eval mode under ``precision``: on a GPU
    replayed from CUDA graphs once a batch shape repeats (``dino.models.cuda_graphs``; the
    launch-bound forward of DINO-4scale runs 2.8x faster so), plainly elsewhere. The
    outputs of a replay are overwritten by the next one: consume them first."""
    if device.type == "cuda":
        from dino.models.cuda_graphs import inference_runner

        return inference_runner(model, AUTOCAST_DTYPES[precision])

    def forward(images: torch.Tensor, masks: torch.Tensor) -> dict:
        with autocast(device, precision):
            return model(images, masks)

    return forward


def to_fp32(obj: Any) -> Any:
    """Cast half-precision float tensors in nested outputs to fp32: losses run in fp32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, dict):
        return {k: to_fp32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_fp32(v) for v in obj)
    return obj


def to_device(images, masks, targets, device):
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, masks, targets


FINITE_CHECK_EVERY = 20


def _raise_if_nonfinite(nonfinite: torch.Tensor, first: int, last: int) -> None:
    if int(nonfinite):
        raise FloatingPointError(f"training loss became NaN/inf between steps {first} and {last} of the epoch; "
                                 "lower train.optim.lr or use train.precision=fp32")


def train_one_epoch(model, criterion, loader, optimizer, scaler, device: torch.device, precision: str,
                    clip_grad_norm: float, log: Callable[[str], None] = print, log_every: int = 50,
                    startup=None) -> dict[str, float]:
    """Train over ``loader`` once. Returns ``train_loss`` (mean weighted total), ``steps``,
    ``time_per_step`` (s). A non-finite loss stops the run: continuing would only waste GPU time.
    ``startup`` (a ``dino.startup.StartupClock``) gets the first batch and the first step marked."""
    model.train()
    criterion.train()
    total, steps, start, n = torch.zeros((), device=device), 0, time.time(), len(loader)
    # Finite-loss check without a host sync per step (it stalled the launch queue every
    # step on a GPU): non-finite steps are counted on the device and read every
    # FINITE_CHECK_EVERY steps. (Non-finite outputs also stop the Hungarian matcher.)
    nonfinite, checked = torch.zeros((), dtype=torch.int64, device=device), 0
    for images, masks, targets in loader:
        if startup is not None and steps == 0:
            startup.mark("first batch")
        images, masks, targets = to_device(images, masks, targets, device)
        with autocast(device, precision):
            outputs = model(images, masks, targets)
        loss = criterion(outputs, targets)["loss"]  # the criterion computes in fp32 (casts after stacking)
        nonfinite += (~torch.isfinite(loss)).to(torch.int64)
        if (steps + 1) % FINITE_CHECK_EVERY == 0 or steps + 1 == n:
            _raise_if_nonfinite(nonfinite, checked + 1, steps + 1)
            checked = steps + 1
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach()
        steps += 1
        if startup is not None and steps == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            startup.mark("first step")
        if log_every and (steps % log_every == 0 or steps == n):
            log(f"  step {steps}/{n}  loss {total.item() / steps:.4f}  lr {optimizer.param_groups[-1]['lr']:.3g}")
    return {"train_loss": total.item() / max(steps, 1), "steps": steps,
            "time_per_step": (time.time() - start) / max(steps, 1)}


@torch.no_grad()
def evaluate(model, criterion, postprocessor, loader, coco_gt: COCO, device: torch.device, precision: str,
             conf_threshold: float = 0.0, gather: Callable[[Any], list | None] | None = None) -> dict[str, Any] | None:
    """COCO bbox mAP of ``loader``'s images against ``coco_gt`` plus the mean loss.

    Returns ``mAP`` (AP@[.5:.95]), ``mAP50``, ``loss``, ``stats`` (COCOeval's 12 numbers),
    ``detections`` (COCO result dicts), ``coco_eval`` (the accumulated COCOeval, for
    per-class numbers; None without detections or ground truth) and the seconds of the
    forward passes (``predict_s``) and of the COCO evaluation (``coco_s``). Labels are
    category ids (TAO convention).
    Sharded (DDP): each rank's ``loader`` holds its share of the images and ``gather``
    brings every rank's ``(detections, loss_sum, count)`` to rank 0 (None elsewhere);
    rank 0 scores them all, the other ranks return None."""
    began = time.perf_counter()
    detections, loss_sum, count = _predict(model, criterion, postprocessor, loader, device, precision, conf_threshold)
    predict_s = time.perf_counter() - began
    if gather is not None:
        parts = gather((detections, loss_sum, count))
        if parts is None:
            return None
        detections = [det for part in parts for det in part[0]]
        loss_sum, count = sum(part[1] for part in parts), sum(part[2] for part in parts)
    began = time.perf_counter()
    ev = coco_eval(coco_gt, detections)
    stats = coco_stats(ev)
    return {"mAP": stats[0], "mAP50": stats[1], "loss": loss_sum / max(count, 1), "stats": stats,
            "detections": detections, "coco_eval": ev, "predict_s": predict_s, "coco_s": time.perf_counter() - began}


def _predict(model, criterion, postprocessor, loader, device: torch.device, precision: str,
             conf_threshold: float) -> tuple[list[dict], float, int]:
    """COCO result dicts, summed loss (per image) and image count over ``loader``."""
    model.eval()
    criterion.eval()
    detections, loss_sum, count = [], 0.0, 0
    forward = inference_forward(model, device, precision)
    for images, masks, targets in loader:
        images, masks, targets = to_device(images, masks, targets, device)
        outputs = to_fp32(forward(images, masks))
        loss_sum += criterion(outputs, targets)["loss"].item() * len(targets)
        count += len(targets)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, res in zip(targets, postprocessor(outputs, sizes)):
            detections.extend(coco_results(int(t["image_id"]), res, conf_threshold))
    return detections, loss_sum, count


def coco_results(image_id: int, result: dict[str, torch.Tensor], conf_threshold: float = 0.0) -> list[dict]:
    """One image's post-processed ``result`` (``scores [k]``, ``labels [k]``, ``boxes [k, 4]``
    xyxy pixels) as COCO result dicts (``bbox`` x, y, w, h), those scoring above
    ``conf_threshold``; rounded as evaluation and ``dino inference`` both write them."""
    keep = result["scores"] > conf_threshold
    xyxy = result["boxes"][keep]
    xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
    return [{"image_id": image_id, "category_id": int(label), "bbox": [round(v, 2) for v in box],
             "score": round(score, 5)}
            for box, score, label in zip(xywh, result["scores"][keep].tolist(), result["labels"][keep].tolist())]


def coco_eval(coco_gt: COCO, detections: list[dict]) -> COCOeval | None:
    """The evaluated, accumulated and summarised bbox COCOeval of ``detections`` (by
    :data:`COCO_EVALUATOR`, its printout silenced); None when there is nothing to score (no
    detection or no ground truth)."""
    known = set(coco_gt.getCatIds())
    # copies: loadRes adds id, area, iscrowd and a segmentation to the dicts it is given,
    # which would otherwise end up in the caller's detections.json
    detections = [dict(d) for d in detections if d["category_id"] in known]  # (logits for unused ids dropped)
    if not detections or not coco_gt.dataset.get("annotations"):
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        ev = (_FasterCOCOeval or COCOeval)(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_stats(ev: COCOeval | None) -> list[float]:
    """COCOeval's 12 bbox stats, -1 (undefined) mapped to 0; all 0 without an evaluation."""
    if ev is None:
        return [0.0] * 12
    return [0.0 if (math.isnan(s) or s < 0) else float(s) for s in ev.stats]


def coco_map(coco_gt: COCO, detections: list[dict]) -> list[float]:
    """COCOeval bbox stats (12 values; -1 where undefined mapped to 0)."""
    return coco_stats(coco_eval(coco_gt, detections))
