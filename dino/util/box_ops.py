"""Bounding-box conversions and (generalized) IoU.

Boxes are either ``cxcywh`` (centre, width, height) as the model predicts them, or
``xyxy`` (corners) as IoU and COCO-style results want them. All functions work on any
leading batch shape ``[..., 4]`` unless a docstring says otherwise.

Degenerate boxes (zero width or height) are allowed: areas are clamped away from zero
in denominators so IoU is 0 and GIoU stays finite instead of NaN. Inverted boxes
(``x1 < x0``) are treated as having zero extent, never negative area.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (x0, y0, x1, y1) -> ``[..., 4]`` (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``[..., 4]`` xyxy boxes -> ``[...]``; inverted boxes count as 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of xyxy boxes, batched over any shared leading dims.

    Args:
        boxes1: ``[..., N, 4]``; boxes2: ``[..., M, 4]``.
    Returns:
        ``(iou [..., N, M], union [..., N, M])``.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # [..., N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union.clamp(min=_EPS), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of xyxy boxes.

    ``GIoU = IoU - (C - U) / C`` with ``C`` the smallest enclosing box's area and ``U``
    the union; in [-1, 1].

    Args:
        boxes1: ``[..., N, 4]``; boxes2: ``[..., M, 4]`` (leading dims shared).
    Returns:
        ``[..., N, M]``.
    """
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=_EPS)


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matched pairs, ``boxes1[i]`` with ``boxes2[i]``: ``[N, 4], [N, 4] -> [N]``.

    Same value as ``generalized_box_iou(b1, b2).diag()`` at O(N) cost (the losses only
    need matched pairs).
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    inter_wh = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = area1 + area2 - inter
    iou = inter / union.clamp(min=_EPS)
    encl_wh = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    enclosing = encl_wh[:, 0] * encl_wh[:, 1]
    return iou - (enclosing - union) / enclosing.clamp(min=_EPS)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of ``x`` clamped to ``[eps, 1 - eps]`` so 0 and 1 map to finite values."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
