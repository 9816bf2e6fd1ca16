"""Focal / L1 / GIoU losses and their bookkeeping (aux, interm, denoising, weights)."""

import math

import pytest
import torch

from dino.models.criterion import SetCriterion, sigmoid_focal_loss
from dino.models.dn_components import DenoisingMeta
from dino.models.matcher import HungarianMatcher


def _focal_by_hand(x: float, t: float, alpha=0.25, gamma=2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    if t == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def _criterion(**kw) -> SetCriterion:
    return SetCriterion(num_classes=3, matcher=HungarianMatcher(), **kw)


def _targets():
    return [
        {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


def _outputs(seed: int, n_queries: int = 4, batch: int = 2) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(batch, n_queries, 3, generator=gen, requires_grad=False),
        "pred_boxes": torch.cat([torch.rand(batch, n_queries, 2, generator=gen),
                                 torch.rand(batch, n_queries, 2, generator=gen) * 0.5 + 0.05], -1),
    }


def test_sigmoid_focal_loss_equals_elementwise_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) * 3
    targets = (torch.rand(2, 3, 4, generator=gen) < 0.3).double()
    want = sum(_focal_by_hand(x, t) for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist()))
    assert sigmoid_focal_loss(logits, targets).sum().item() == pytest.approx(want, rel=1e-9)


def test_label_and_box_losses_by_hand_for_given_indices():
    crit = _criterion()
    out, targets = _outputs(1), _targets()
    indices = [(torch.tensor([3, 1]), torch.tensor([0, 1])), (torch.tensor([0]), torch.tensor([0]))]
    num_boxes = 3.0

    positives = {(0, 3, 2), (0, 1, 0), (1, 0, 1)}  # (image, query, class)
    want_ce = sum(_focal_by_hand(out["pred_logits"][b, q, k].item(), float((b, q, k) in positives))
                  for b in range(2) for q in range(4) for k in range(3)) / num_boxes
    assert crit.loss_labels(out["pred_logits"], targets, indices, num_boxes).item() == pytest.approx(want_ce, rel=1e-5)

    pairs = [(out["pred_boxes"][0, 3], targets[0]["boxes"][0]), (out["pred_boxes"][0, 1], targets[0]["boxes"][1]),
             (out["pred_boxes"][1, 0], targets[1]["boxes"][0])]
    want_l1 = sum((p - t).abs().sum().item() for p, t in pairs) / num_boxes

    def giou(p, t):
        a = [p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2]
        b = [t[0] - t[2] / 2, t[1] - t[3] / 2, t[0] + t[2] / 2, t[1] + t[3] / 2]
        inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
        union = p[2] * p[3] + t[2] * t[3] - inter
        hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        return inter / union - (hull - union) / hull

    want_giou = sum(1 - giou(p.tolist(), t.tolist()) for p, t in pairs) / num_boxes
    l1, g = crit.loss_boxes(out["pred_boxes"], targets, indices, num_boxes)
    assert l1.item() == pytest.approx(want_l1, rel=1e-5)
    assert g.item() == pytest.approx(want_giou, rel=1e-5)


def test_perfect_boxes_give_zero_box_losses():
    crit = _criterion(aux_loss=False)
    targets = _targets()
    out = _outputs(2, n_queries=3)
    out["pred_boxes"][0, :2] = targets[0]["boxes"]
    out["pred_boxes"][1, 0] = targets[1]["boxes"][0]
    out["pred_logits"][:] = -20.0
    out["pred_logits"][0, 0, 2] = out["pred_logits"][0, 1, 0] = out["pred_logits"][1, 0, 1] = 20.0
    losses = crit(out, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_ce"].item() < 1e-6


def test_total_is_weighted_sum_with_aux_interm_and_dn_terms():
    targets = _targets()
    out = _outputs(3)
    out["aux_outputs"] = [_outputs(4), _outputs(5)]
    out["interm_outputs"] = _outputs(6)
    meta = DenoisingMeta(num_groups=2, max_boxes=2)
    out["dn_outputs"] = [_outputs(7 + i, n_queries=meta.pad_size) for i in range(3)]
    out["dn_meta"] = meta

    crit = _criterion(cls_loss_coef=2.0, bbox_loss_coef=5.0, giou_loss_coef=3.0, interm_loss_coef=0.5)
    losses = crit(out, targets)
    suffixes = ["", "_0", "_1", "_interm", "_dn", "_dn_0", "_dn_1"]
    for s in suffixes:
        for name in ("loss_ce", "loss_bbox", "loss_giou"):
            assert torch.isfinite(losses[name + s]), name + s
    coef = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 3.0}
    want = sum(coef[n] * losses[n + s] * (0.5 if s == "_interm" else 1.0) for s in suffixes for n in coef)
    assert losses["loss"].item() == pytest.approx(want.item(), rel=1e-6)

    boxless = _criterion(interm_loss_coef=0.5, no_interm_box_loss=True)
    no_box = boxless(out, targets)
    assert "loss_bbox_interm" not in no_box and "loss_giou_interm" not in no_box and "loss_ce_interm" in no_box
    # the total weighs exactly the terms it logs: the proposals' box terms neither
    want = sum(boxless.coef[n] * no_box[n + s] * (0.5 if s == "_interm" else 1.0)
               for s in suffixes for n in coef if n + s in no_box)
    assert no_box["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_dn_losses_use_the_positive_copies_of_each_box():
    targets = _targets()
    meta = DenoisingMeta(num_groups=2, max_boxes=2)  # layout per image: [pos pos neg neg] x 2 groups
    dn = _outputs(10, n_queries=meta.pad_size)
    q, t = meta.positive_indices(1, torch.device("cpu"))
    assert q.tolist() == [0, 4] and t.tolist() == [0, 0]
    q, t = meta.positive_indices(2, torch.device("cpu"))
    assert q.tolist() == [0, 1, 4, 5] and t.tolist() == [0, 1, 0, 1]

    out = _outputs(11)
    out["dn_outputs"], out["dn_meta"] = [dn], meta
    losses = _criterion(aux_loss=False)(out, targets)
    pairs = [(dn["pred_boxes"][0, qq], targets[0]["boxes"][tt]) for qq, tt in [(0, 0), (1, 1), (4, 0), (5, 1)]]
    pairs += [(dn["pred_boxes"][1, qq], targets[1]["boxes"][0]) for qq in (0, 4)]
    num_boxes = 3 * meta.num_groups
    want_l1 = sum((p - tb).abs().sum().item() for p, tb in pairs) / num_boxes
    assert losses["loss_bbox_dn"].item() == pytest.approx(want_l1, rel=1e-5)
    # negatives (queries 2, 3, 6, 7) and image 1's padding slots are pushed to "no object"
    positives = {(0, 0, 2), (0, 1, 0), (0, 4, 2), (0, 5, 0), (1, 0, 1), (1, 4, 1)}
    want_ce = sum(_focal_by_hand(dn["pred_logits"][b, qq, k].item(), float((b, qq, k) in positives))
                  for b in range(2) for qq in range(8) for k in range(3)) / num_boxes
    assert losses["loss_ce_dn"].item() == pytest.approx(want_ce, rel=1e-5)


def test_batch_without_boxes_has_finite_losses_and_same_keys():
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    out = _outputs(12)
    out["pred_logits"].requires_grad_(True)
    out["aux_outputs"] = [_outputs(13)]
    out["interm_outputs"] = _outputs(14)
    losses = _criterion()(out, empty)
    for key in ("loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0", "loss_bbox", "loss_giou_interm"):
        assert key in losses and torch.isfinite(losses[key])
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_ce"].item() > 0
    losses["loss"].backward()
    assert out["pred_logits"].grad is not None and torch.isfinite(out["pred_logits"].grad).all()


def test_label_outside_num_classes_is_a_clear_error():
    bad = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
    with pytest.raises(ValueError, match="num_classes"):
        _criterion()(_outputs(15, batch=1), bad)
