"""Hungarian matching of predictions to ground-truth boxes (one-to-one, DETR).

The cost of assigning query ``i`` to target ``j`` is
``cost_class * focal(i, label_j) + cost_bbox * L1(box_i, box_j) - cost_giou * GIoU(box_i, box_j)``,
where the class term is the focal loss of predicting ``label_j`` minus that of not
predicting it (so it has the same scale as the training loss). Costs are computed per
image on the device, moved to the CPU in one transfer, and solved with scipy.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from dino.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def focal_class_cost(prob: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Class part of the matching cost.

    Args:
        prob: ``[Q, K]`` sigmoid class probabilities; labels: ``[n]`` target classes.
    Returns:
        ``[Q, n]``: focal loss if query ``i`` is positive for ``labels[j]`` minus if negative.
    """
    p = prob[:, labels]
    eps = 1e-8
    positive = alpha * (1 - p) ** gamma * -(p + eps).log()
    negative = (1 - alpha) * p**gamma * -(1 - p + eps).log()
    return positive - negative


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of queries to targets, per image.

    Args:
        cost_class / cost_bbox / cost_giou: weights of the three cost terms (DINO: 2, 5, 2).
        focal_alpha / focal_gamma: parameters of the focal class cost.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0; at least one must be positive")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor) -> Tensor:
        """``[Q, K]`` logits, ``[Q, 4]`` boxes vs ``[n]`` labels, ``[n, 4]`` boxes -> ``[Q, n]`` cost."""
        boxes, target_boxes = boxes.float(), target_boxes.float()
        c_class = focal_class_cost(logits.float().sigmoid(), labels, self.focal_alpha, self.focal_gamma)
        c_bbox = torch.cdist(boxes, target_boxes, p=1)
        c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return self.cost_class * c_class + self.cost_bbox * c_bbox + self.cost_giou * c_giou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Args:
            outputs: ``pred_logits [B, Q, K]`` and ``pred_boxes [B, Q, 4]`` (cxcywh).
            targets: B dicts with ``labels [n_b]`` and ``boxes [n_b, 4]`` (cxcywh).
        Returns:
            B pairs ``(query_idx [m_b], target_idx [m_b])`` (int64, CPU), ``m_b = min(Q, n_b)``.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        sizes = [len(t["labels"]) for t in targets]
        costs = [
            self.cost_matrix(logits[b], boxes[b], t["labels"], t["boxes"])
            for b, t in enumerate(targets) if sizes[b] > 0
        ]
        flat = torch.cat([c.flatten() for c in costs]).cpu() if costs else torch.zeros(0)
        if not torch.isfinite(flat).all():
            raise FloatingPointError(
                "matching cost is NaN/inf: the model's outputs are not finite (training diverged); "
                "lower train.optim.lr, keep gradient clipping on, or use fp32/bf16 instead of fp16"
            )
        empty = torch.zeros(0, dtype=torch.int64)
        indices, offset = [], 0
        for n in sizes:
            if n == 0:
                indices.append((empty, empty))
                continue
            cost = flat[offset:offset + boxes.shape[1] * n].view(boxes.shape[1], n)
            offset += cost.numel()
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
