"""Box conversions and (generalized) IoU against hand computations."""

import math

import pytest
import torch

from dino.util.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
    paired_generalized_box_iou,
)


def _random_xyxy(n: int, gen: torch.Generator) -> torch.Tensor:
    x0y0 = torch.rand(n, 2, generator=gen)
    wh = torch.rand(n, 2, generator=gen) * 0.5
    return torch.cat([x0y0, x0y0 + wh], 1)


def _giou_by_hand(a: list[float], b: list[float]) -> float:
    """Scalar GIoU straight from the definition, with 0/0 read as 0."""
    def area(box):
        return max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    iou = inter / union if union > 0 else 0.0
    c = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iou - ((c - union) / c if c > 0 else 0.0)


def test_cxcywh_xyxy_round_trip_and_values():
    box = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    assert torch.allclose(box_cxcywh_to_xyxy(box), torch.tensor([[0.4, 0.1, 0.6, 0.7]]))
    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(3, 5, 4, generator=gen)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)


@pytest.mark.parametrize(
    "a, b, expected_iou, expected_giou",
    [
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7, 1 / 7 - 2 / 9),  # overlap: inter 1, union 7, hull 9
        ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),  # disjoint: union 2, hull 3
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0, 1.0),  # identical
        ([0, 0, 2, 2], [0.5, 0.5, 1.5, 1.5], 0.25, 0.25),  # contained: hull is the big box
        ([1, 1, 1, 2], [0, 0, 2, 2], 0.0, 0.0),  # zero-width box inside: union 4, hull 4
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0, 0.0),  # two identical points: everything 0, no NaN
        ([0, 0, 0, 1], [2, 0, 2, 1], 0.0, -1.0),  # two zero-width segments: union 0, hull 2
    ],
)
def test_iou_and_giou_by_hand(a, b, expected_iou, expected_giou):
    ta, tb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    iou, _ = box_iou(ta, tb)
    assert iou.item() == pytest.approx(expected_iou, abs=1e-9)
    assert generalized_box_iou(ta, tb).item() == pytest.approx(expected_giou, abs=1e-9)
    assert paired_generalized_box_iou(ta, tb).item() == pytest.approx(expected_giou, abs=1e-9)
    assert _giou_by_hand(a, b) == pytest.approx(expected_giou, abs=1e-9)


def test_pairwise_giou_matches_scalar_definition_on_random_boxes():
    gen = torch.Generator().manual_seed(1)
    b1, b2 = _random_xyxy(6, gen).double(), _random_xyxy(4, gen).double()
    b1[0, 2] = b1[0, 0]  # one degenerate box
    got = generalized_box_iou(b1, b2)
    assert got.shape == (6, 4)
    for i in range(6):
        for j in range(4):
            assert got[i, j].item() == pytest.approx(_giou_by_hand(b1[i].tolist(), b2[j].tolist()), abs=1e-9)
    assert (got <= 1).all() and (got >= -1).all()


def test_paired_giou_equals_diagonal_of_pairwise():
    gen = torch.Generator().manual_seed(2)
    b1, b2 = _random_xyxy(7, gen), _random_xyxy(7, gen)
    assert torch.allclose(paired_generalized_box_iou(b1, b2), generalized_box_iou(b1, b2).diag(), atol=1e-6)


def test_giou_gradient_is_finite_for_degenerate_boxes():
    b1 = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.4, 0.4]], requires_grad=True)
    b2 = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.3]])
    paired_generalized_box_iou(b1, b2).sum().backward()
    assert torch.isfinite(b1.grad).all()


def test_inverse_sigmoid_inverts_sigmoid_and_stays_finite_at_the_ends():
    x = torch.linspace(0.01, 0.99, 50)
    assert torch.allclose(inverse_sigmoid(x).sigmoid(), x, atol=1e-6)
    ends = inverse_sigmoid(torch.tensor([0.0, 1.0, -0.5, 1.5]))
    assert torch.isfinite(ends).all()
    assert ends[0].item() == pytest.approx(math.log(1e-5), rel=1e-3)
