"""Turns the model's raw outputs into scored boxes in pixels, COCO style.

Each query can yield several classes: the ``num_select`` best (query, class) pairs over
all ``Q x K`` sigmoid scores are kept, as DINO does, which raises recall over taking one
class per query.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dino.util.box_ops import box_cxcywh_to_xyxy


class PostProcess(nn.Module):
    """Top-``num_select`` detections per image.

    Args:
        num_select: detections kept per image (at most ``Q * K``).
    """

    def __init__(self, num_select: int = 300):
        super().__init__()
        self.num_select = num_select

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Args:
            outputs: ``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]`` (cxcywh relative to
                the unpadded image).
            target_sizes: ``[B, 2]`` (height, width) of the original images.
        Returns:
            B dicts: ``scores [k]`` (descending), ``labels [k]`` (int64 class ids),
            ``boxes [k, 4]`` (x0, y0, x1, y1 in pixels of the original image),
            ``k = min(num_select, Q * K)``.
        """
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        batch, n_queries, n_classes = logits.shape
        if len(target_sizes) != batch:
            raise ValueError(f"target_sizes has {len(target_sizes)} rows for a batch of {batch}")
        k = min(self.num_select, n_queries * n_classes)
        scores, flat_idx = logits.sigmoid().flatten(1).topk(k, dim=1)  # [B, k]
        query_idx = torch.div(flat_idx, n_classes, rounding_mode="floor")
        labels = flat_idx % n_classes
        picked = boxes.gather(1, query_idx[..., None].expand(-1, -1, 4))  # [B, k, 4]
        h, w = target_sizes.to(picked).unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None]  # [B, 1, 4]
        xyxy = box_cxcywh_to_xyxy(picked) * scale
        return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy)]
