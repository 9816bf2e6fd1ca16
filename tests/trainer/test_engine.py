"""COCO mAP computation and fp32 casting used by the engine."""

from __future__ import annotations

import pytest
import torch

from dino.data.coco import coco_index
from dino.engine import coco_map, to_fp32

GT = {
    "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a"}, {"id": 2, "width": 100, "height": 100, "file_name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [50, 50, 40, 20], "area": 800, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
}


def test_perfect_detections_score_one_and_misses_score_zero():
    gt = coco_index(GT)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in GT["annotations"]]
    stats = coco_map(gt, perfect)
    assert stats[0] == pytest.approx(1.0) and stats[1] == pytest.approx(1.0)
    wrong_class = [{**d, "category_id": 3} for d in perfect]
    assert coco_map(gt, wrong_class)[1] == pytest.approx(0.5)
    shifted = [{**d, "bbox": [d["bbox"][0] + 25, d["bbox"][1], d["bbox"][2], d["bbox"][3]]} for d in perfect]
    assert coco_map(gt, shifted)[1] == 0.0
    assert coco_map(gt, []) == [0.0] * 12
    unknown = [{**d, "category_id": 0} for d in perfect]  # a class index with no category
    assert coco_map(gt, unknown)[1] == 0.0


def test_to_fp32_casts_nested_half_tensors_only():
    out = to_fp32({"a": torch.ones(1, dtype=torch.bfloat16), "b": [torch.ones(1, dtype=torch.float16)],
                   "c": torch.ones(1, dtype=torch.int64), "d": None})
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float32
    assert out["c"].dtype == torch.int64 and out["d"] is None


def _toy_epoch(losses: list[float]):
    """train_one_epoch over len(losses) steps of a linear model whose loss is ``losses[i]``
    times a differentiable term."""
    from dino.engine import train_one_epoch

    model = torch.nn.Linear(2, 1)
    values = iter(losses)

    class Criterion(torch.nn.Module):
        def forward(self, outputs, targets):
            return {"loss": outputs.sum() * 0 + next(values)}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, images, masks, targets):
            return self.lin(images)

    batches = [(torch.ones(1, 2), torch.zeros(1, 1, dtype=torch.bool), [{"labels": torch.zeros(0)}])] * len(losses)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_one_epoch(Model(), Criterion(), batches, opt, scaler, torch.device("cpu"), "fp32", 0.0, log_every=0)


def test_a_non_finite_loss_stops_the_epoch_within_the_check_interval():
    from dino.engine import FINITE_CHECK_EVERY

    assert _toy_epoch([1.0] * 5)["steps"] == 5
    with pytest.raises(FloatingPointError, match="NaN/inf between steps 1 and 5 of the epoch; lower train.optim.lr"):
        _toy_epoch([1.0, 1.0, float("nan"), 1.0, 1.0])
    n = FINITE_CHECK_EVERY + 3
    with pytest.raises(FloatingPointError, match=f"between steps {FINITE_CHECK_EVERY + 1} and {n} "):
        _toy_epoch([1.0] * (FINITE_CHECK_EVERY + 1) + [float("inf"), 1.0])
