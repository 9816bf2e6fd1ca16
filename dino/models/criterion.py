"""DINO's training loss: sigmoid focal + L1 + GIoU on matched queries.

Applied to (suffix of the loss name in brackets):
  * the last decoder layer (none) and every earlier layer (``_0`` .. ``_{L-2}``), each
    Hungarian-matched on its own;
  * the selected encoder proposals (``_interm``), weighted additionally by
    ``interm_loss_coef``; with ``no_interm_box_loss`` only their class loss counts;
  * the denoising queries of every layer (``_dn``, ``_dn_0`` ..): positives are matched
    to their own ground-truth box by construction, negatives and padding must predict
    "no object".
Every term is normalised by the number of target boxes in the batch (summed over
processes under DDP); denoising terms by that times the number of groups.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models.dn_components import DenoisingMeta
from dino.models.matcher import HungarianMatcher
from dino.util.box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Summed focal loss (Lin et al. 2017) of ``[..., K]`` logits against 0/1 targets.

    ``alpha`` weighs positives, ``1 - alpha`` negatives; ``alpha < 0`` disables it.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


class SetCriterion(nn.Module):
    """Computes every loss term and their weighted sum ``loss``.

    Args:
        num_classes: width of the class logits; labels index them directly.
        matcher: assigns queries to targets.
        cls_loss_coef / bbox_loss_coef / giou_loss_coef: weights of focal, L1, GIoU.
        focal_alpha: focal loss alpha.
        aux_loss: also supervise the intermediate decoder layers.
        interm_loss_coef: extra factor on the encoder-proposal terms.
        no_interm_box_loss: drop the encoder proposals' L1 and GIoU terms.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, cls_loss_coef: float = 2.0,
                 bbox_loss_coef: float = 5.0, giou_loss_coef: float = 2.0, focal_alpha: float = 0.25,
                 aux_loss: bool = True, interm_loss_coef: float = 1.0, no_interm_box_loss: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.coef = {"loss_ce": cls_loss_coef, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
        self.focal_alpha = focal_alpha
        self.aux_loss = aux_loss
        self.interm_loss_coef = interm_loss_coef
        self.no_interm_box_loss = no_interm_box_loss

    def loss_labels(self, logits: Tensor, targets: list[dict[str, Tensor]],
                    indices: list[tuple[Tensor, Tensor]], num_boxes: float) -> Tensor:
        """Focal loss over all ``[B, Q, K]`` logits; matched queries are positive for
        their target's class, everything else is negative for every class."""
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        batch_idx, query_idx, labels = self._flatten(targets, indices, logits.device)
        onehot[batch_idx, query_idx, labels] = 1.0
        return sigmoid_focal_loss(logits.float(), onehot, self.focal_alpha) / num_boxes

    def loss_boxes(self, boxes: Tensor, targets: list[dict[str, Tensor]],
                   indices: list[tuple[Tensor, Tensor]], num_boxes: float) -> tuple[Tensor, Tensor]:
        """L1 and ``1 - GIoU`` of matched ``[B, Q, 4]`` cxcywh boxes, summed / num_boxes."""
        batch_idx, query_idx, _ = self._flatten(targets, indices, boxes.device)
        src = boxes[batch_idx, query_idx].float()
        tgt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)]).float()
        l1 = F.l1_loss(src, tgt, reduction="sum") / num_boxes
        giou = (1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum() / num_boxes
        return l1, giou

    @staticmethod
    def _flatten(targets: list[dict[str, Tensor]], indices: list[tuple[Tensor, Tensor]],
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """-> ``(batch_idx, query_idx, label)`` of all matched pairs, on ``device``."""
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        return batch_idx, query_idx, labels.to(device)

    def _terms(self, out: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: list[tuple[Tensor, Tensor]],
               num_boxes: float, with_boxes: bool = True) -> dict[str, Tensor]:
        """The three terms of one set of predictions, keyed ``loss_ce`` / ``loss_bbox`` / ``loss_giou``."""
        terms = {"loss_ce": self.loss_labels(out["pred_logits"], targets, indices, num_boxes)}
        if with_boxes:
            terms["loss_bbox"], terms["loss_giou"] = self.loss_boxes(out["pred_boxes"], targets, indices, num_boxes)
        return terms

    def _num_boxes(self, targets: list[dict[str, Tensor]], device: torch.device) -> float:
        n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return max(float(n.item()), 1.0)

    def _check_labels(self, targets: list[dict[str, Tensor]]) -> None:
        labels = torch.cat([t["labels"].flatten() for t in targets]) if targets else torch.zeros(0)
        if labels.numel():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_classes:
                bad = high if high >= self.num_classes else low
                raise ValueError(
                    f"a target has label {bad}, outside 0..{self.num_classes - 1}: "
                    "dataset.num_classes must be at least the largest category id + 1"
                )

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Args:
            outputs: the model's output dict (``pred_logits``, ``pred_boxes``, optional
                ``aux_outputs``, ``interm_outputs``, ``dn_outputs`` + ``dn_meta``).
            targets: B dicts ``labels [n_b]``, ``boxes [n_b, 4]`` (cxcywh, 0..1).
        Returns:
            unweighted terms by name plus ``loss``, the weighted total to backpropagate.
        """
        self._check_labels(targets)
        device = outputs["pred_logits"].device
        num_boxes = self._num_boxes(targets, device)
        losses: dict[str, Tensor] = {}
        weights: dict[str, float] = {}

        def add(terms: dict[str, Tensor], suffix: str, factor: float = 1.0) -> None:
            for name, value in terms.items():
                losses[name + suffix] = value
                weights[name + suffix] = self.coef[name] * factor

        layers = [(outputs, "")]
        if self.aux_loss:
            layers += [(aux, f"_{i}") for i, aux in enumerate(outputs.get("aux_outputs", []))]
        for out, suffix in layers:
            add(self._terms(out, targets, self.matcher(out, targets), num_boxes), suffix)
        if "interm_outputs" in outputs:
            interm = outputs["interm_outputs"]
            terms = self._terms(interm, targets, self.matcher(interm, targets), num_boxes,
                                with_boxes=not self.no_interm_box_loss)
            add(terms, "_interm", self.interm_loss_coef)
        for suffix, terms in self._dn_losses(outputs, targets, num_boxes):
            add(terms, suffix)

        losses["loss"] = sum(weights[k] * v for k, v in losses.items())
        return losses

    def _dn_losses(self, outputs: dict, targets: list[dict[str, Tensor]],
                   num_boxes: float) -> list[tuple[str, dict[str, Tensor]]]:
        """Denoising terms as ``(suffix, terms)``; zeros under the same names when the
        batch had no denoising queries, so logged keys never change."""
        dn_layers = outputs.get("dn_outputs")
        meta: DenoisingMeta | None = outputs.get("dn_meta")
        n_layers = 1 + (len(outputs.get("aux_outputs", [])) if self.aux_loss else 0)
        suffixes = ["_dn"] + [f"_dn_{i}" for i in range(n_layers - 1)]
        if not dn_layers or meta is None:
            zero = outputs["pred_logits"].sum() * 0.0
            return [(s, {"loss_ce": zero, "loss_bbox": zero, "loss_giou": zero}) for s in suffixes]
        indices = [meta.positive_indices(len(t["labels"]), torch.device("cpu")) for t in targets]
        ordered = [dn_layers[-1]] + list(dn_layers[:-1])  # last layer first, like the matching outputs
        return [(s, self._terms(out, targets, indices, num_boxes * meta.num_groups))
                for out, s in zip(ordered, suffixes)]
