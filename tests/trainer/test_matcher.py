"""Hungarian matcher: cost formula by hand, assignment against brute force."""

import itertools
import math

import pytest
import torch

from dino.models.matcher import HungarianMatcher, focal_class_cost


def _cost_by_hand(logit_row, box, label, target_box, alpha=0.25, gamma=2.0, weights=(2.0, 5.0, 2.0)):
    """Matching cost of one (query, target) pair, scalar arithmetic only."""
    p = 1 / (1 + math.exp(-logit_row[label]))
    focal = alpha * (1 - p) ** gamma * -math.log(p + 1e-8) - (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
    l1 = sum(abs(a - b) for a, b in zip(box, target_box))

    def xyxy(b):
        return [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2]

    a, b = xyxy(box), xyxy(target_box)
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    union = box[2] * box[3] + target_box[2] * target_box[3] - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    giou = inter / union - (hull - union) / hull
    return weights[0] * focal + weights[1] * l1 - weights[2] * giou


def _random_problem(seed, n_queries, n_targets, n_classes=4):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_queries, n_classes, generator=gen, dtype=torch.float64) * 2
    boxes = torch.cat([torch.rand(n_queries, 2, generator=gen), torch.rand(n_queries, 2, generator=gen) * 0.4 + 0.05],
                      1)
    labels = torch.randint(0, n_classes, (n_targets,), generator=gen)
    tboxes = torch.cat([torch.rand(n_targets, 2, generator=gen), torch.rand(n_targets, 2, generator=gen) * 0.4 + 0.05],
                       1)
    return logits, boxes.double(), labels, tboxes.double()


def test_focal_class_cost_formula():
    prob = torch.tensor([[0.1, 0.7], [0.5, 0.99]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1])
    got = focal_class_cost(prob, labels)
    assert got.shape == (2, 3)
    for i in range(2):
        for j, lab in enumerate(labels.tolist()):
            p = prob[i, lab].item()
            want = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8) - 0.75 * p**2 * -math.log(1 - p + 1e-8)
            assert got[i, j].item() == pytest.approx(want, rel=1e-9)


def test_cost_matrix_matches_scalar_formula():
    logits, boxes, labels, tboxes = _random_problem(0, 5, 3)
    cost = HungarianMatcher().cost_matrix(logits, boxes, labels, tboxes)
    for i in range(5):
        for j in range(3):
            want = _cost_by_hand(logits[i].tolist(), boxes[i].tolist(), labels[j].item(), tboxes[j].tolist())
            assert cost[i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("seed, n_queries, n_targets", [(1, 5, 3), (2, 6, 4), (3, 4, 4), (4, 3, 5), (5, 6, 1)])
def test_assignment_is_optimal_against_brute_force(seed, n_queries, n_targets):
    logits, boxes, labels, tboxes = _random_problem(seed, n_queries, n_targets)
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(logits, boxes, labels, tboxes)
    outputs = {"pred_logits": logits[None], "pred_boxes": boxes[None]}
    [(rows, cols)] = matcher(outputs, [{"labels": labels, "boxes": tboxes}])

    m = min(n_queries, n_targets)
    assert len(rows) == len(cols) == m
    assert len(set(rows.tolist())) == m and len(set(cols.tolist())) == m
    c = cost.tolist()
    got = sum(c[q][t] for q, t in zip(rows.tolist(), cols.tolist()))
    if n_queries >= n_targets:  # every target gets a distinct query
        best = min(sum(c[q][t] for t, q in enumerate(perm))
                   for perm in itertools.permutations(range(n_queries), n_targets))
    else:  # every query gets a distinct target
        best = min(sum(c[q][t] for q, t in enumerate(perm))
                   for perm in itertools.permutations(range(n_targets), n_queries))
    assert got == pytest.approx(best, abs=1e-9)


def test_batch_with_empty_image_and_per_image_indices():
    l0, b0, lab0, t0 = _random_problem(6, 5, 2)
    l1, b1, _, _ = _random_problem(7, 5, 0)
    l2, b2, lab2, t2 = _random_problem(8, 5, 3)
    targets = [
        {"labels": lab0, "boxes": t0},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4, dtype=torch.float64)},
        {"labels": lab2, "boxes": t2},
    ]
    matcher = HungarianMatcher()
    out = matcher({"pred_logits": torch.stack([l0, l1, l2]), "pred_boxes": torch.stack([b0, b1, b2])}, targets)
    assert [len(r) for r, _ in out] == [2, 0, 3]
    # each image is matched on its own: same answer as matching it alone
    alone = matcher({"pred_logits": l2[None], "pred_boxes": b2[None]}, [targets[2]])[0]
    assert torch.equal(out[2][0], alone[0]) and torch.equal(out[2][1], alone[1])
    assert all(r.dtype == torch.int64 for r, _ in out)


def test_all_empty_targets_and_non_finite_outputs():
    matcher = HungarianMatcher()
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    out = matcher({"pred_logits": torch.randn(2, 4, 3), "pred_boxes": torch.rand(2, 4, 4)}, [empty, empty])
    assert [len(r) for r, _ in out] == [0, 0]
    bad = torch.rand(1, 4, 4)
    bad[0, 1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged"):
        matcher({"pred_logits": torch.randn(1, 4, 3), "pred_boxes": bad},
                [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}])
