"""Hungarian matching of predictions to ground-truth boxes (one-to-one, DETR).

The cost of assigning query ``i`` to target ``j`` is
``cost_class * focal(i, label_j) + cost_bbox * L1(box_i, box_j) - cost_giou * GIoU(box_i, box_j)``,
where the class term is the focal loss of predicting ``label_j`` minus that of not
predicting it (so it has the same scale as the training loss).

Costs of every prediction set (last layer, earlier layers, encoder proposals) and every
image are computed in one batched pass on the device against targets padded to the
largest image, moved to the CPU in one transfer (the step's only sync for matching),
and each image's own block is solved with scipy.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from dino.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

Indices = list[tuple[Tensor, Tensor]]  # per image: (query_idx [m], target_idx [m]), int64 on the CPU


def focal_class_cost(prob: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Class part of the matching cost.

    Args:
        prob: ``[..., Q, K]`` sigmoid class probabilities; labels: ``[..., n]`` target classes.
    Returns:
        ``[..., Q, n]``: focal loss if query ``i`` is positive for ``labels[j]`` minus if negative.
    """
    index = labels[..., None, :].expand(*prob.shape[:-1], labels.shape[-1])
    p = prob.gather(-1, index)
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
        """Batched cost: ``[..., Q, K]`` logits and ``[..., Q, 4]`` boxes (cxcywh) against
        ``[..., n]`` labels and ``[..., n, 4]`` boxes -> ``[..., Q, n]``."""
        boxes, target_boxes = boxes.float(), target_boxes.float()
        c_class = focal_class_cost(logits.float().sigmoid(), labels, self.focal_alpha, self.focal_gamma)
        c_bbox = torch.cdist(boxes, target_boxes, p=1)
        c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return self.cost_class * c_class + self.cost_bbox * c_bbox + self.cost_giou * c_giou

    @torch.no_grad()
    def match_sets(self, sets: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> list[Indices]:
        """Match several prediction sets of the same shape at once.

        Args:
            sets: S dicts with ``pred_logits [B, Q, K]`` and ``pred_boxes [B, Q, 4]``.
            targets: B dicts with ``labels [n_b]`` and ``boxes [n_b, 4]`` (cxcywh).
        Returns:
            per set, per image, ``(query_idx, target_idx)`` with ``min(Q, n_b)`` pairs.
        """
        sizes = [len(t["labels"]) for t in targets]
        n_max = max(sizes, default=0)
        empty = torch.zeros(0, dtype=torch.int64)
        if n_max == 0:
            return [[(empty, empty) for _ in targets] for _ in sets]
        logits = torch.stack([s["pred_logits"] for s in sets])  # [S, B, Q, K]
        boxes = torch.stack([s["pred_boxes"] for s in sets])  # [S, B, Q, 4]
        batch, n_queries, n_classes = logits.shape[1:]
        labels = torch.zeros(batch, n_max, dtype=torch.long, device=logits.device)
        tboxes = torch.full((batch, n_max, 4), 0.5, device=logits.device)  # harmless padding boxes
        for b, t in enumerate(targets):
            labels[b, :sizes[b]] = t["labels"]
            tboxes[b, :sizes[b]] = t["boxes"]
        labels = labels.clamp(0, n_classes - 1)  # range errors are the criterion's to report
        cost = self.cost_matrix(logits, boxes, labels.expand(len(sets), -1, -1),
                                tboxes.expand(len(sets), -1, -1, -1)).cpu()  # [S, B, Q, N]
        if not torch.isfinite(cost).all():
            raise FloatingPointError(
                "matching cost is NaN/inf: the model's outputs are not finite (training diverged); "
                "lower train.optim.lr, keep gradient clipping on, or use fp32/bf16 instead of fp16"
            )
        result = []
        for per_set in cost:
            indices = []
            for b, n in enumerate(sizes):
                if n == 0:
                    indices.append((empty, empty))
                    continue
                rows, cols = linear_sum_assignment(per_set[b, :, :n].numpy())
                indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
            result.append(indices)
        return result

    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Indices:
        """Match one prediction set (``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]``)."""
        return self.match_sets([outputs], targets)[0]
