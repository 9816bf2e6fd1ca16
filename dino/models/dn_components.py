"""Contrastive denoising training (DINO Sec. 3.2).

During training, noised copies of the ground-truth boxes are fed to the decoder as extra
queries, in ``G`` groups. Each group has a *positive* half (box corners moved by less
than half the box size: reconstruct the box) and a *negative* half (moved by between one
and two half-sizes: predict "no object"). Labels are flipped to a random class with
probability ``label_noise_ratio / 2``. An attention mask keeps the matching queries from
seeing any denoising query (that would leak the answer) and keeps groups apart.

Query layout along the query axis of the decoder::

    [group 0: pos x M | neg x M] ... [group G-1: pos x M | neg x M] [matching x num_queries]

with ``M`` the largest number of boxes of an image in the batch; slots past an image's
own ``n_b`` boxes are padding (zero content, empty box) and get only the no-object loss.

With a fixed number of slots (``slots``, for CUDA graphs of the decoder, whose shapes
must not follow the targets) the layout is followed by unused slots up to that count:
zero content, empty box, seen by no other query and left out of every loss, so the
other queries compute what they compute without them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from dino.util.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


@dataclasses.dataclass(frozen=True)
class DenoisingMeta:
    """Where the denoising queries sit: ``num_groups`` blocks of ``2 * max_boxes``, then
    unused slots up to ``num_slots`` (0: none)."""

    num_groups: int
    max_boxes: int
    num_slots: int = 0

    @property
    def group_size(self) -> int:
        return 2 * self.max_boxes

    @property
    def pad_size(self) -> int:
        """Denoising queries in use (the groups), ``P``."""
        return self.num_groups * self.group_size

    @property
    def slots(self) -> int:
        """Denoising queries ahead of the matching ones, unused slots included (``>= P``)."""
        return max(self.num_slots, self.pad_size)

    def positive_indices(self, num_boxes: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Query indices of the positive copies of an image's ``num_boxes`` boxes.

        Returns ``(query_idx [G * n], target_idx [G * n])``: group-major, so target ``j``
        of group ``g`` is query ``g * group_size + j``.
        """
        j = torch.arange(num_boxes, device=device)
        g = torch.arange(self.num_groups, device=device)
        query_idx = (g[:, None] * self.group_size + j[None]).flatten()
        return query_idx, j.repeat(self.num_groups)


class ContrastiveDenoising(nn.Module):
    """Builds the denoising queries, their anchors and the self-attention mask.

    Args:
        num_classes: size of the label embedding (labels index it directly).
        hidden_dim: query width.
        dn_number: about how many (positive) denoising queries per image; the number of
            groups is ``max(1, dn_number // max_boxes)``.
        label_noise_ratio: twice the probability of flipping a label.
        box_noise_scale: scale of the corner noise (1.0 as in DINO).
    """

    def __init__(self, num_classes: int, hidden_dim: int, dn_number: int = 100,
                 label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.label_enc = nn.Embedding(num_classes, hidden_dim)

    def slots_for(self, max_boxes: int) -> int:
        """Denoising slots that hold the layout of any batch whose images have at most
        ``max_boxes`` boxes: ``2 * max(dn_number, max_boxes)`` (``G * 2M`` with
        ``G = max(1, dn_number // M)`` never exceeds it)."""
        return 2 * max(self.dn_number, max_boxes)

    def forward(self, targets: list[dict[str, Tensor]], num_queries: int, slots: int | None = None
                ) -> tuple[Tensor, Tensor, Tensor, DenoisingMeta] | None:
        """Args:
            targets: B dicts with ``labels [n_b]`` and ``boxes [n_b, 4]`` (cxcywh, 0..1).
            num_queries: matching queries that follow the denoising ones.
            slots: denoising queries to lay out, unused ones included, for a shape that
                does not follow the targets; a batch whose layout needs more gets its own
                size (``meta.slots`` says which). None: the layout's own size.
        Returns:
            ``(tgt [B, D, C], ref_logits [B, D, 4], attn_mask [D + Nq, D + Nq], meta)``
            with ``D = meta.slots`` (``meta.pad_size`` without ``slots``) and
            ``attn_mask`` True where attention is blocked; None when no image of the
            batch has a box or ``dn_number`` is 0.
        """
        counts = [len(t["labels"]) for t in targets]
        max_boxes = max(counts, default=0)
        if max_boxes == 0 or self.dn_number <= 0:
            return None
        device = self.label_enc.weight.device
        batch, groups = len(targets), max(1, self.dn_number // max_boxes)
        meta = DenoisingMeta(num_groups=groups, max_boxes=max_boxes, num_slots=slots or 0)

        labels = torch.zeros(batch, max_boxes, dtype=torch.long, device=device)
        boxes = torch.zeros(batch, max_boxes, 4, dtype=torch.float32, device=device)
        present = torch.zeros(batch, max_boxes, dtype=torch.bool, device=device)
        for b, t in enumerate(targets):
            n = counts[b]
            labels[b, :n] = t["labels"].to(device)
            boxes[b, :n] = t["boxes"].to(device=device, dtype=torch.float32)
            present[b, :n] = True

        # [B, G, 2 (pos/neg), M]
        shape = (batch, groups, 2, max_boxes)
        labels = labels[:, None, None].expand(shape)
        boxes = boxes[:, None, None].expand(*shape, 4)
        present = present[:, None, None].expand(shape)

        if self.label_noise_ratio > 0:
            flip = torch.rand(shape, device=device) < self.label_noise_ratio * 0.5
            labels = torch.where(flip, torch.randint_like(labels, 0, self.num_classes), labels)
        if self.box_noise_scale > 0:
            half_wh = torch.cat([boxes[..., 2:], boxes[..., 2:]], -1) / 2  # (w/2, h/2, w/2, h/2)
            sign = torch.randint(0, 2, boxes.shape, device=device, dtype=torch.float32) * 2 - 1
            magnitude = torch.rand(boxes.shape, device=device)
            magnitude[:, :, 1] += 1.0  # negatives: moved by [1, 2) half-sizes
            corners = box_cxcywh_to_xyxy(boxes) + sign * magnitude * half_wh * self.box_noise_scale
            boxes = box_xyxy_to_cxcywh(corners.clamp(0.0, 1.0))

        unused = meta.slots - meta.pad_size
        if unused:  # absent boxes, like the padding inside the groups: [B, G, 2, M] -> [B, D]
            present = torch.cat([present.reshape(batch, -1), present.new_zeros(batch, unused)], 1)
            labels = torch.cat([labels.reshape(batch, -1), labels.new_zeros(batch, unused)], 1)
            boxes = torch.cat([boxes.reshape(batch, -1, 4), boxes.new_zeros(batch, unused, 4)], 1)
        tgt = self.label_enc(labels) * present[..., None]
        ref_logits = inverse_sigmoid(boxes.masked_fill(~present[..., None], 0.0))
        tgt = tgt.reshape(batch, meta.slots, -1)
        ref_logits = ref_logits.reshape(batch, meta.slots, 4)
        return tgt, ref_logits, self.attention_mask(meta, num_queries, device), meta

    @staticmethod
    def attention_mask(meta: DenoisingMeta, num_queries: int, device: torch.device) -> Tensor:
        """``[D + Nq, D + Nq]`` bool (``D = meta.slots``), True = blocked: matching
        queries see no denoising query; a denoising query sees its own group and the
        matching queries. The unused slots form one more group, which only they see."""
        slots = meta.slots
        mask = torch.zeros(slots + num_queries, slots + num_queries, dtype=torch.bool, device=device)
        group = (torch.arange(slots, device=device) // meta.group_size).clamp(max=meta.num_groups)
        mask[:slots, :slots] = group[:, None] != group[None, :]
        mask[slots:, :slots] = True
        return mask
