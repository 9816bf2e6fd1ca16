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

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


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


def train_one_epoch(model, criterion, loader, optimizer, scaler, device: torch.device, precision: str,
                    clip_grad_norm: float, log: Callable[[str], None] = print, log_every: int = 50,
                    startup=None) -> dict[str, float]:
    """Train over ``loader`` once. Returns ``train_loss`` (mean weighted total), ``steps``,
    ``time_per_step`` (s). A non-finite loss stops the run: continuing would only waste GPU time.
    ``startup`` (a ``dino.startup.StartupClock``) gets the first batch and the first step marked."""
    model.train()
    criterion.train()
    total, steps, start, n = torch.zeros((), device=device), 0, time.time(), len(loader)
    for images, masks, targets in loader:
        if startup is not None and steps == 0:
            startup.mark("first batch")
        images, masks, targets = to_device(images, masks, targets, device)
        with autocast(device, precision):
            outputs = model(images, masks, targets)
        loss = criterion(to_fp32(outputs), targets)["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {steps + 1} of the epoch; "
                                     "lower train.optim.lr or use train.precision=fp32")
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

    Returns ``mAP`` (AP@[.5:.95]), ``mAP50``, ``loss``, ``stats`` (COCOeval's 12 numbers)
    and ``detections`` (COCO result dicts). Labels are category ids (TAO convention).
    Sharded (DDP): each rank's ``loader`` holds its share of the images and ``gather``
    brings every rank's ``(detections, loss_sum, count)`` to rank 0 (None elsewhere);
    rank 0 scores them all, the other ranks return None."""
    detections, loss_sum, count = _predict(model, criterion, postprocessor, loader, device, precision, conf_threshold)
    if gather is not None:
        parts = gather((detections, loss_sum, count))
        if parts is None:
            return None
        detections = [det for part in parts for det in part[0]]
        loss_sum, count = sum(part[1] for part in parts), sum(part[2] for part in parts)
    stats = coco_map(coco_gt, detections)
    return {"mAP": stats[0], "mAP50": stats[1], "loss": loss_sum / max(count, 1), "stats": stats,
            "detections": detections}


def _predict(model, criterion, postprocessor, loader, device: torch.device, precision: str,
             conf_threshold: float) -> tuple[list[dict], float, int]:
    """COCO result dicts, summed loss (per image) and image count over ``loader``."""
    model.eval()
    criterion.eval()
    detections, loss_sum, count = [], 0.0, 0
    for images, masks, targets in loader:
        images, masks, targets = to_device(images, masks, targets, device)
        with autocast(device, precision):
            outputs = model(images, masks, targets)
        outputs = to_fp32(outputs)
        loss_sum += criterion(outputs, targets)["loss"].item() * len(targets)
        count += len(targets)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, res in zip(targets, postprocessor(outputs, sizes)):
            keep = res["scores"] > conf_threshold
            xyxy = res["boxes"][keep]
            xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
            for box, score, label in zip(xywh, res["scores"][keep].tolist(), res["labels"][keep].tolist()):
                detections.append({"image_id": int(t["image_id"]), "category_id": int(label),
                                   "bbox": [round(v, 2) for v in box], "score": round(score, 5)})
    return detections, loss_sum, count


def coco_map(coco_gt: COCO, detections: list[dict]) -> list[float]:
    """COCOeval bbox stats (12 values; -1 where undefined mapped to 0), pycocotools' printout silenced."""
    known = set(coco_gt.getCatIds())
    detections = [d for d in detections if d["category_id"] in known]  # logits for unused ids
    if not detections or not coco_gt.dataset.get("annotations"):
        return [0.0] * 12
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [0.0 if (math.isnan(s) or s < 0) else float(s) for s in ev.stats]
