"""DINO's training loss: sigmoid focal + L1 + GIoU on matched queries.

Applied to (suffix of the loss name in brackets):
  * the last decoder layer (none) and every earlier layer (``_0`` .. ``_{L-2}``), each
    Hungarian-matched on its own;
  * the selected encoder proposals (``_interm``), weighted additionally by
    ``interm_loss_coef``; with ``no_interm_box_loss`` only their class loss counts;
  * the denoising queries of every layer (``_dn``, ``_dn_0`` ..): positives are matched
    to their own ground-truth box by construction, negatives and padding must predict
    "no object".
Every term is normalised by the number of target boxes in the batch (averaged over
processes under DDP); denoising terms by that times the number of groups.

All prediction sets are stacked and their terms computed in a few batched operations:
a per-layer, per-image Python loop would cost thousands of tiny kernel launches a step.
Half-precision outputs (bf16 / fp16 autocast) are cast to float32 after stacking, so
the trainer passes the model's outputs as they are; the weighted total is one dot
product per term family, not a multiply-add per named term.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models.dn_components import DenoisingMeta
from dino.models.matcher import HungarianMatcher, Indices
from dino.util.box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017) of logits against 0/1 targets (same shape).

    ``alpha`` weighs positives, ``1 - alpha`` negatives; ``alpha < 0`` disables it.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def _pairs(indices_per_set: list[Indices], offsets: list[int], device: torch.device) -> Tensor:
    """Flatten matches into ``[4, M]`` rows (set, image, query, target index into the
    concatenated targets), built on the CPU in a few whole-list operations (not a few
    per image and set) and moved to ``device`` in one copy."""
    flat = [pair for indices in indices_per_set for pair in indices]  # (query_idx, target_idx) per (set, image)
    if not flat:
        return torch.zeros(4, 0, dtype=torch.int64).to(device)
    counts = torch.tensor([len(q) for q, _ in flat], dtype=torch.int64)
    n_images = len(indices_per_set[0])
    ids = torch.arange(len(flat), dtype=torch.int64)
    sets, images = (ids // n_images).repeat_interleave(counts), (ids % n_images).repeat_interleave(counts)
    queries = torch.cat([q for q, _ in flat])
    shift = torch.tensor(offsets, dtype=torch.int64)[ids % n_images].repeat_interleave(counts)
    rows = torch.stack([sets, images, queries, torch.cat([j for _, j in flat]) + shift])
    return rows.to(device, non_blocking=True)


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
        self._weight_cache: dict[tuple, Tensor] = {}

    def set_losses(self, logits: Tensor, boxes: Tensor, pairs: Tensor, labels: Tensor, target_boxes: Tensor,
                   num_boxes: float) -> dict[str, Tensor]:
        """Terms of S stacked prediction sets.

        Args:
            logits: ``[S, B, Q, K]``; boxes: ``[S, B, Q, 4]`` cxcywh.
            pairs: ``[4, M]`` (set, image, query, target) matches, see ``_pairs``.
            labels / target_boxes: ``[T]`` / ``[T, 4]`` all targets concatenated.
        Returns:
            ``loss_ce``, ``loss_bbox``, ``loss_giou``, each ``[S]``: focal over every logit
            (matched queries positive for their target's class, all else negative), L1 and
            ``1 - GIoU`` over matched pairs; all summed and divided by ``num_boxes``.
        """
        s, b, q, t = pairs
        onehot = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        onehot[s, b, q, labels[t]] = 1.0
        focal = sigmoid_focal_loss(logits.float(), onehot, self.focal_alpha).flatten(1).sum(1)
        src, tgt = boxes[s, b, q].float(), target_boxes[t].float()
        n_sets = logits.shape[0]
        l1 = torch.zeros(n_sets, device=boxes.device).index_add(0, s, (src - tgt).abs().sum(-1))
        giou = 1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        giou = torch.zeros(n_sets, device=boxes.device).index_add(0, s, giou)
        return {"loss_ce": focal / num_boxes, "loss_bbox": l1 / num_boxes, "loss_giou": giou / num_boxes}

    def loss_labels(self, logits: Tensor, targets: list[dict[str, Tensor]], indices: Indices,
                    num_boxes: float) -> Tensor:
        """Focal term of one ``[B, Q, K]`` set for given matches (a scalar)."""
        return self._one_set(logits, torch.zeros(*logits.shape[:2], 4, device=logits.device), targets, indices,
                             num_boxes)["loss_ce"]

    def loss_boxes(self, boxes: Tensor, targets: list[dict[str, Tensor]], indices: Indices,
                   num_boxes: float) -> tuple[Tensor, Tensor]:
        """L1 and GIoU terms of one ``[B, Q, 4]`` set for given matches (scalars)."""
        terms = self._one_set(torch.zeros(*boxes.shape[:2], self.num_classes, device=boxes.device), boxes, targets,
                              indices, num_boxes)
        return terms["loss_bbox"], terms["loss_giou"]

    def _one_set(self, logits, boxes, targets, indices, num_boxes):
        labels, target_boxes, offsets = self._concat_targets(targets, logits.device)
        terms = self.set_losses(logits[None], boxes[None], _pairs([indices], offsets, logits.device), labels,
                                target_boxes, num_boxes)
        return {k: v[0] for k, v in terms.items()}

    @staticmethod
    def _concat_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, list[int]]:
        sizes = [len(t["labels"]) for t in targets]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        labels = torch.cat([t["labels"].reshape(-1) for t in targets]).to(device) if targets else torch.zeros(0)
        boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]).to(device) if targets else torch.zeros(0, 4)
        return labels.long(), boxes, offsets

    def _num_boxes(self, targets: list[dict[str, Tensor]], device: torch.device) -> float:
        n = float(sum(len(t["labels"]) for t in targets))
        if dist.is_available() and dist.is_initialized():
            total = torch.tensor([n], device=device)
            dist.all_reduce(total)
            n = float(total.item()) / dist.get_world_size()
        return max(n, 1.0)

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel():
            low, high = torch.stack([labels.min(), labels.max()]).tolist()
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
        device = outputs["pred_logits"].device
        labels, target_boxes, offsets = self._concat_targets(targets, device)
        num_boxes = self._num_boxes(targets, device)

        # matched sets: last layer, earlier layers, encoder proposals
        sets, names = [outputs], [""]
        if self.aux_loss:
            sets += outputs.get("aux_outputs", [])
            names += [f"_{i}" for i in range(len(outputs.get("aux_outputs", [])))]
        if "interm_outputs" in outputs:
            sets.append(outputs["interm_outputs"])
            names.append("_interm")
        indices = self.matcher.match_sets(sets, targets)  # the step's one device sync
        self._check_labels(labels)
        terms = self.set_losses(torch.stack([s["pred_logits"] for s in sets]),
                                torch.stack([s["pred_boxes"] for s in sets]),
                                _pairs(indices, offsets, device), labels, target_boxes, num_boxes)

        # the weighted total as one dot product per term and family (matched, denoising)
        # instead of a multiply-add per named scalar: ~40 fewer tiny kernels each way
        interm = [suffix == "_interm" for suffix in names]
        losses: dict[str, Tensor] = {}
        total = None
        for name, values in terms.items():
            part = values @ self._set_weights(name, tuple(interm), values)
            total = part if total is None else total + part
            for k, suffix in enumerate(names):
                if self._counts(name, interm[k]):
                    losses[name + suffix] = values[k]
        dn_terms, dn_suffixes = self._dn_losses(outputs, targets, labels, target_boxes, offsets, num_boxes)
        for name, values in dn_terms.items():
            total = total + self.coef[name] * values.sum()
            for k, suffix in enumerate(dn_suffixes):
                losses[name + suffix] = values[k]
        losses["loss"] = total
        return losses

    def _counts(self, name: str, interm: bool) -> bool:
        """Whether term ``name`` of a matched set counts (is weighted and logged): with
        ``no_interm_box_loss`` the encoder proposals' box terms do not."""
        return not (interm and self.no_interm_box_loss and name != "loss_ce")

    def _set_weights(self, name: str, interm: tuple[bool, ...], values: Tensor) -> Tensor:
        """``[S]`` weights of term ``name`` over the matched sets (``interm`` marks the
        encoder proposals), made once per layout and device: no copy to the GPU per step."""
        key = (name, interm, values.device, values.dtype)
        weights = self._weight_cache.get(key)
        if weights is None:
            weights = self._weight_cache[key] = torch.tensor(
                [self.coef[name] * (self.interm_loss_coef if i else 1.0) if self._counts(name, i) else 0.0
                 for i in interm], dtype=values.dtype).to(values.device)
        return weights

    def _dn_losses(self, outputs: dict, targets: list[dict[str, Tensor]], labels: Tensor, target_boxes: Tensor,
                   offsets: list[int], num_boxes: float) -> tuple[dict[str, Tensor], list[str]]:
        """Denoising terms by name (``loss_ce`` ..., each ``[n_layers]``, last layer first)
        and the layers' suffixes (``_dn``, ``_dn_0`` ..); zeros when the batch had no
        denoising queries, so logged keys never change."""
        n_layers = 1 + (len(outputs.get("aux_outputs", [])) if self.aux_loss else 0)
        suffixes = ["_dn"] + [f"_dn_{i}" for i in range(n_layers - 1)]
        dn_layers = outputs.get("dn_outputs")
        meta: DenoisingMeta | None = outputs.get("dn_meta")
        if not dn_layers or meta is None:
            zero = outputs["pred_logits"].float().sum() * 0.0
            return {name: zero.expand(n_layers) for name in self.coef}, suffixes
        positives = [meta.positive_indices(len(t["labels"]), torch.device("cpu")) for t in targets]
        ordered = ([dn_layers[-1]] + list(dn_layers[:-1]))[:n_layers]  # last layer first, like the matched sets
        terms = self.set_losses(torch.stack([o["pred_logits"] for o in ordered]),
                                torch.stack([o["pred_boxes"] for o in ordered]),
                                _pairs([positives] * len(ordered), offsets, labels.device), labels, target_boxes,
                                num_boxes * meta.num_groups)
        return terms, suffixes
