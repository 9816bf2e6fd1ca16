"""Validation's COCO evaluator (faster-coco-eval) gives pycocotools' numbers.

``dino.engine.coco_eval`` scores every validation with faster-coco-eval when it is
installed (a dependency: 3-4x faster, see ``COCO_EVALUATOR``). The headline numbers, the
accumulated precision and recall arrays and the per-class table must be the ones
pycocotools' own ``COCOeval`` computes, on ground truth with crowd boxes and an image
without boxes and on detections of every kind (near misses, wrong classes, clutter).
"""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dino.class_ap import per_class_ap
from dino.data.synth import generate_dataset
from dino.engine import COCO_EVALUATOR, coco_eval


@pytest.fixture(scope="module")
def ground_truth_and_detections(tmp_path_factory):
    paths = generate_dataset(str(tmp_path_factory.mktemp("coco_eval")), 40, 4, 96, seed=3, val_fraction=0.0)
    data = json.loads(open(paths.train.json_file).read())
    rng = random.Random(0)
    data["annotations"][0]["iscrowd"] = 1  # a crowd box: matches are ignored, not counted as misses
    data["annotations"][5]["iscrowd"] = 1
    empty = data["images"][-1]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    detections = []
    for image in data["images"]:
        anns = gt.imgToAnns[image["id"]]
        for k in range(60):
            if anns and k < 3 * len(anns):
                x, y, w, h = anns[k % len(anns)]["bbox"]
                box = [x + rng.gauss(0, 2), y + rng.gauss(0, 2), max(1.0, w + rng.gauss(0, 3)), max(1.0, h + rng.gauss(0, 3))]
                label = anns[k % len(anns)]["category_id"] if rng.random() < 0.8 else rng.randint(1, 4)
                score = rng.uniform(0.3, 1.0)
            else:
                box = [rng.uniform(0, 80), rng.uniform(0, 80), rng.uniform(3, 40), rng.uniform(3, 40)]
                label, score = rng.randint(1, 4), rng.uniform(0.0, 0.4)
            detections.append({"image_id": image["id"], "category_id": label, "bbox": [round(v, 2) for v in box],
                               "score": round(score, 5)})
    return gt, detections


def test_the_installed_fast_evaluator_is_the_one_used():
    assert COCO_EVALUATOR.startswith("faster-coco-eval "), COCO_EVALUATOR


def test_fast_evaluator_gives_pycocotools_numbers(ground_truth_and_detections):
    gt, detections = ground_truth_and_detections
    fast = coco_eval(gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert type(fast).__module__.startswith("faster_coco_eval")
    assert 0.2 < reference.stats[1] < 0.95  # a meaningful score, neither trivial nor perfect
    np.testing.assert_allclose(fast.stats, reference.stats, rtol=0, atol=1e-12)
    for key in ("precision", "recall", "scores"):
        np.testing.assert_allclose(fast.eval[key], reference.eval[key], rtol=0, atol=1e-12, err_msg=key)
    fast_rows, reference_rows = per_class_ap(fast), per_class_ap(reference)
    assert [(r.category_id, r.name, r.num_gt, r.num_det) for r in fast_rows] == \
        [(r.category_id, r.name, r.num_gt, r.num_det) for r in reference_rows]
    for mine, theirs in zip(fast_rows, reference_rows):  # the arrays agree to 2e-16 (summation order)
        for field in ("ap", "ap50", "ap75", "ar100"):
            assert getattr(mine, field) == pytest.approx(getattr(theirs, field), abs=1e-12), (mine, field)
