"""Per-class COCO numbers from an accumulated COCOeval: the table ``dino evaluate`` prints.

COCOeval's ``eval["precision"]`` is ``[T, R, K, A, M]`` (IoU thresholds .50:.05:.95,
101 recall points, categories, area ranges, max-detection limits) with -1 where a
category has no ground truth. The overall AP (``stats[0]``) is the mean over every
entry that is not -1 at area "all" and 100 detections, and a category's entries are
either all -1 or all >= 0, so the overall AP is exactly the mean of the per-class APs
over the categories that have ground truth (:func:`mean_ap`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

AREA_ALL, MAX_DETS_100 = 0, -1  # indices into COCOeval's area ranges and maxDets (1, 10, 100)


@dataclasses.dataclass(frozen=True)
class ClassAP:
    """One category's row. The AP / AR fields are None when it has no ground truth in the split."""

    category_id: int
    name: str
    num_gt: int  # ground-truth boxes COCOeval scores against (crowd boxes excluded)
    num_det: int  # detections of this category in the results
    ap: float | None  # AP@[.50:.95], area all, 100 detections (COCO's headline number)
    ap50: float | None
    ap75: float | None
    ar100: float | None  # recall@[.50:.95] with 100 detections


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def per_class_ap(ev: COCOeval) -> list[ClassAP]:
    """A row per category of the ground truth, in category-id order."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    recall = ev.eval["recall"]  # [T, K, A, M]
    iou = ev.params.iouThrs
    t50, t75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))
    rows = []
    for k, cat_id in enumerate(ev.params.catIds):
        cat = ev.cocoGt.cats[cat_id]
        gt = ev.cocoGt.getAnnIds(imgIds=ev.params.imgIds, catIds=[cat_id], iscrowd=False)
        det = ev.cocoDt.getAnnIds(imgIds=ev.params.imgIds, catIds=[cat_id])
        p = precision[:, :, k, AREA_ALL, MAX_DETS_100]  # [T, R]
        rows.append(ClassAP(
            category_id=int(cat_id), name=str(cat.get("name", cat_id)), num_gt=len(gt), num_det=len(det),
            ap=_mean(p), ap50=_mean(p[t50]), ap75=_mean(p[t75]),
            ar100=_mean(recall[:, k, AREA_ALL, MAX_DETS_100]),
        ))
    return rows


def rows_without_detections(coco_gt: COCO) -> list[ClassAP]:
    """The table when nothing was detected (COCOeval is not run): AP 0 where there is ground truth."""
    rows = []
    for cat_id in sorted(coco_gt.getCatIds()):
        cat = coco_gt.cats[cat_id]
        n_gt = len(coco_gt.getAnnIds(catIds=[cat_id], iscrowd=False))
        zero = 0.0 if n_gt else None
        rows.append(ClassAP(int(cat_id), str(cat.get("name", cat_id)), n_gt, 0, zero, zero, zero, zero))
    return rows


def mean_ap(rows: list[ClassAP]) -> float:
    """Mean AP over the categories with ground truth: equals COCOeval's ``stats[0]``."""
    values = [r.ap for r in rows if r.ap is not None]
    return float(np.mean(values)) if values else 0.0


def format_table(rows: list[ClassAP]) -> str:
    """A fixed-width text table, one line per category ('-' where there is no ground truth)."""
    width = max([len("class")] + [len(r.name) for r in rows])

    def num(value: float | None) -> str:
        return f"{value:7.4f}" if value is not None else f"{'-':>7}"

    lines = [f"{'id':>4}  {'class':<{width}}  {'AP':>7}  {'AP50':>7}  {'AP75':>7}  {'AR100':>7}  {'gt':>6}  {'dets':>7}"]
    for r in rows:
        lines.append(f"{r.category_id:>4}  {r.name:<{width}}  {num(r.ap)}  {num(r.ap50)}  {num(r.ap75)}  "
                     f"{num(r.ar100)}  {r.num_gt:>6}  {r.num_det:>7}")
    return "\n".join(lines)
