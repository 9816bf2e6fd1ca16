"""``dino evaluate`` on a trained tiny model: it reproduces the last validation, scores any split,
and its per-class table agrees with COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dino.class_ap import format_table, mean_ap, per_class_ap, rows_without_detections
from dino.data.coco import coco_index
from dino.engine import coco_eval

from dino_test_utils import read_status, run_dino


@pytest.fixture(scope="module")
def evaluated(trained_shapes, tmp_path_factory):
    """``dino evaluate`` of the latest checkpoint on the val split (the spec has no test split)."""
    out = tmp_path_factory.mktemp("evaluate")
    proc = run_dino("evaluate", "-e", str(trained_shapes["spec"]), f"evaluate.results_dir={out}")
    assert proc.returncode == 0, proc.stderr
    return {"proc": proc, "dir": out, "status": read_status(out, ""),
            "metrics": json.loads((out / "metrics.json").read_text()),
            "per_class": json.loads((out / "per_class_ap.json").read_text())}


def test_evaluate_reproduces_the_last_validation(trained_shapes, evaluated):
    val = trained_shapes["last_kpi"]
    assert float(val["val_mAP"]) > 0.0, "the tiny model must detect something for this comparison to mean anything"
    kpi = evaluated["status"][-1]["kpi"]
    assert evaluated["status"][-1]["status"] == "SUCCESS"
    assert isinstance(kpi["test_mAP"], str) and isinstance(kpi["test_mAP50"], str)  # TAO writes them as strings
    assert float(kpi["test_mAP"]) == pytest.approx(float(val["val_mAP"]), abs=1e-4)
    assert float(kpi["test_mAP50"]) == pytest.approx(float(val["val_mAP50"]), abs=1e-4)
    assert evaluated["metrics"]["split"] == "dataset.val_data_sources" and evaluated["metrics"]["num_images"] == 24
    assert re.search(r"^Test mAP : (\S+)$", evaluated["proc"].stdout, re.M).group(1) == kpi["test_mAP"]


def test_overall_map_is_pycocotools_on_the_same_detections(trained_shapes, evaluated):
    gt = COCO(trained_shapes["data"].val.json_file)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(str(evaluated["dir"] / "detections.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] > 0
    assert evaluated["metrics"]["mAP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert evaluated["metrics"]["mAP50"] == pytest.approx(ev.stats[1], abs=1e-12)


def test_per_class_table_written_and_printed(trained_shapes, evaluated):
    table = evaluated["per_class"]
    gt = json.loads(open(trained_shapes["data"].val.json_file).read())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    rows = table["classes"]
    assert [r["category_id"] for r in rows] == sorted(names) and [r["name"] for r in rows] == [names[i] for i in sorted(names)]
    for r in rows:
        assert r["num_gt"] == sum(a["category_id"] == r["category_id"] for a in gt["annotations"]) > 0
        for key in ("ap", "ap50", "ap75", "ar100"):
            assert 0.0 <= r[key] <= 1.0, (key, r)
        assert r["ap"] <= r["ap50"]
    assert sum(r["ap50"] > 0 for r in rows) >= 1
    # every class has ground truth here, so COCO's overall AP is their plain mean
    assert table["mean_of_classes"] == pytest.approx(table["mAP"], abs=1e-12)
    assert sum(r["ap"] for r in rows) / len(rows) == pytest.approx(evaluated["metrics"]["mAP"], abs=1e-12)
    stdout = evaluated["proc"].stdout
    assert "Per-class AP (dataset.val_data_sources, 24 images):" in stdout
    for r in rows:
        assert re.search(rf"^\s+{r['category_id']}\s+{r['name']}\s+{r['ap']:.4f}\s+{r['ap50']:.4f}", stdout, re.M)


def test_per_class_numbers_on_hand_made_detections():
    """A class without ground truth has no AP and stays out of the mean, which is then COCO's."""
    gt = coco_index({
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 50, 40, 20], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "emu"}],
    })
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},  # perfect
        {"image_id": 2, "category_id": 2, "bbox": [50, 50, 40, 20], "score": 0.8},  # one of two dogs found
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 20, 20], "score": 0.7},  # an emu that is not there
    ]
    ev = coco_eval(gt, dets)
    rows = {r.name: r for r in per_class_ap(ev)}
    assert rows["cat"].ap == pytest.approx(1.0) and rows["cat"].num_gt == 1 and rows["cat"].num_det == 1
    assert rows["dog"].ap50 == pytest.approx(0.5, abs=0.01) and rows["dog"].ar100 == pytest.approx(0.5)
    assert rows["emu"].ap is None and rows["emu"].num_gt == 0 and rows["emu"].num_det == 1
    assert mean_ap(list(rows.values())) == pytest.approx(ev.stats[0], abs=1e-12)
    assert mean_ap(list(rows.values())) == pytest.approx((rows["cat"].ap + rows["dog"].ap) / 2)
    assert re.search(r"^\s+3\s+emu(\s+-){4}\s+0\s+1$", format_table(list(rows.values())), re.M)


def test_no_detections_still_lists_every_class():
    gt = coco_index({
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    })
    assert coco_eval(gt, []) is None
    rows = rows_without_detections(gt)
    assert [(r.name, r.ap, r.num_gt, r.num_det) for r in rows] == [("cat", None, 0, 0), ("dog", 0.0, 1, 0)]
    assert mean_ap(rows) == 0.0


def test_test_split_given_as_tao_writes_it(trained_shapes, tmp_path):
    """``dataset.test_data_sources`` as one mapping (TAO's evaluate spec): scored instead of val."""
    full = json.loads(open(trained_shapes["data"].val.json_file).read())
    keep = {img["id"] for img in full["images"][:10]}
    subset = {**full, "images": [i for i in full["images"] if i["id"] in keep],
              "annotations": [a for a in full["annotations"] if a["image_id"] in keep]}
    (tmp_path / "test.json").write_text(json.dumps(subset))
    source = f"{{image_dir: {trained_shapes['data'].val.image_dir}, json_file: {tmp_path / 'test.json'}}}"
    proc = run_dino("evaluate", "-e", str(trained_shapes["spec"]), f"evaluate.results_dir={tmp_path / 'ev'}",
                    f"dataset.test_data_sources={source}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["split"] == "dataset.test_data_sources" and metrics["num_images"] == 10
    lines = read_status(tmp_path / "ev", "")
    assert any("10 images of dataset.test_data_sources" in line["message"] for line in lines)
    assert "test_mAP" in lines[-1]["kpi"] and lines[-1]["status"] == "SUCCESS"


def test_half_set_test_split_is_bad_input_not_a_silent_fallback(trained_shapes, tmp_path):
    proc = run_dino("evaluate", "-e", str(trained_shapes["spec"]), f"evaluate.results_dir={tmp_path}",
                    f"dataset.test_data_sources={{image_dir: {trained_shapes['data'].val.image_dir}}}")
    assert proc.returncode == 2
    assert "dataset.test_data_sources[0].json_file is empty" in proc.stderr
    assert read_status(tmp_path, "")[-1]["status"] == "FAILURE"
