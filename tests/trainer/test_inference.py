"""``dino inference``: COCO results that pycocotools loads and that score as ``dino evaluate`` does,
drawn images, the status log, bad input before any model work, SIGTERM."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import dino.inference
from dino.cli import main
from dino.config import load_spec
from dino.draw import draw_detections

from dino_test_utils import dino_env, read_status, run_dino

NUM_SELECT = 20  # the tiny model's model.num_select


def coco_score(gt: COCO, results) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def test_predictions_load_in_pycocotools_and_score_as_evaluate(trained_shapes, tmp_path):
    data, spec = trained_shapes["data"], str(trained_shapes["spec"])
    ev = run_dino("evaluate", "-e", spec, f"evaluate.results_dir={tmp_path / 'ev'}")
    assert ev.returncode == 0, ev.stderr
    test_map = float(read_status(tmp_path / "ev", "")[-1]["kpi"]["test_mAP"])
    assert test_map > 0, "the tiny model must detect something for the comparison to mean anything"

    inf = run_dino("inference", "-e", spec, f"inference.results_dir={tmp_path / 'inf'}", "inference.conf_threshold=0",
                   f"dataset.infer_data_sources.image_dir=[{data.val.image_dir}]",
                   f"dataset.infer_data_sources.json_file={data.val.json_file}")
    assert inf.returncode == 0, inf.stderr
    predictions = tmp_path / "inf" / "predictions.json"
    gt = COCO(data.val.json_file)
    stats = coco_score(gt, str(predictions))  # loadRes accepts the file as written
    assert stats[0] == pytest.approx(test_map, abs=1e-12)
    # the very same detections, image ids from the annotation file
    ours = json.loads(predictions.read_text())
    theirs = json.loads((tmp_path / "ev" / "detections.json").read_text())
    key = lambda d: (d["image_id"], -d["score"], d["category_id"], d["bbox"])  # noqa: E731
    assert sorted(ours, key=key) == sorted(theirs, key=key)
    assert len(ours) == 24 * NUM_SELECT and {d["image_id"] for d in ours} == set(gt.getImgIds())
    listing = json.loads((tmp_path / "inf" / "images.json").read_text())
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    assert {img["file_name"]: img["id"] for img in listing["images"]} == by_name
    assert [c["name"] for c in listing["categories"]] == ["circle", "square"]  # from the annotation file


@pytest.fixture(scope="module")
def folder_run(trained_shapes, tmp_path_factory):
    """Inference on a plain folder (no annotations) of five images of three sizes, batches of 3,
    with a TAO classmap and a colour for one class."""
    root = tmp_path_factory.mktemp("infer_folder")
    folder = root / "images"
    folder.mkdir()
    sources = sorted(os.listdir(trained_shapes["data"].val.image_dir))[:5]
    sizes = [(64, 64), (96, 64), (64, 80), (64, 64), (70, 70)]
    for k, (name, (w, h)) in enumerate(zip(sources, sizes)):
        img = Image.open(os.path.join(trained_shapes["data"].val.image_dir, name)).convert("RGB").resize((w, h))
        img.save(folder / f"img_{k}.{'png' if k % 2 else 'jpg'}")
    (folder / "notes.txt").write_text("not an image")  # skipped: not an image extension
    (root / "classes.txt").write_text("circle\nsquare\n\n")
    out = root / "out"
    proc = run_dino("inference", "-e", str(trained_shapes["spec"]), f"inference.results_dir={out}",
                    "inference.conf_threshold=0.05", "inference.batch_size=3", "inference.outline_width=2",
                    "inference.color_map={square: '#00ff00'}", f"dataset.infer_data_sources.image_dir=[{folder}]",
                    f"dataset.infer_data_sources.classmap={root / 'classes.txt'}")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "folder": folder, "out": out, "proc": proc, "sizes": sizes}


def test_folder_images_get_ids_listed_with_their_file_names(folder_run):
    out = folder_run["out"]
    listing = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in listing["images"]] == [
        (k + 1, f"img_{k}.{'png' if k % 2 else 'jpg'}", w, h) for k, (w, h) in enumerate(folder_run["sizes"])]
    assert listing["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]  # line i = id i
    # the listing is a COCO file: the predictions load against it without any annotation file
    coco = COCO(str(out / "images.json"))
    dets = coco.loadRes(str(out / "predictions.json"))
    anns = dets.dataset["annotations"]
    assert anns and all(a["score"] > 0.05 for a in anns)
    for a in anns:  # boxes in pixels of each original image (not clipped: centres inside, as the model predicts)
        img = coco.imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert 0 <= x + w / 2 <= img["width"] and 0 <= y + h / 2 <= img["height"] and w >= 0 and h >= 0


def test_drawn_images_have_the_input_size_and_boxes(folder_run):
    out, folder = folder_run["out"], folder_run["folder"]
    dets = json.loads((out / "predictions.json").read_text())
    drawn = sorted(os.listdir(out / "images_annotated"))
    assert drawn == sorted(n for n in os.listdir(folder) if not n.endswith(".txt"))
    for k, name in enumerate(sorted(drawn)):
        before, after = Image.open(folder / name).convert("RGB"), Image.open(out / "images_annotated" / name)
        assert after.size == before.size == folder_run["sizes"][int(name[4])]
        if any(d["image_id"] == int(name[4]) + 1 for d in dets):
            assert np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).max() > 100


def test_progress_lines_and_status_log(folder_run):
    stdout, out = folder_run["proc"].stdout, folder_run["out"]
    assert "Inference: 5 images in 2 batches of 3 on cpu" in stdout
    assert re.findall(r"^  batch (\d)/2  (\d)/5 images", stdout, re.M) == [("1", "3"), ("2", "5")]
    lines = read_status(out, "")
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "SUCCESS"
    assert all(set(line) >= {"date", "time", "status", "verbosity", "message"} for line in lines)
    progress = [line for line in lines if line["message"] == "Inference in progress"]
    assert [(p["step"], p["max_step"], p["images"]) for p in progress] == [(1, 2, 3), (2, 2, 5)]
    written = [line for line in lines if line["message"].startswith("Inference results written")]
    assert written and written[0]["num_images"] == 5
    assert written[0]["num_detections"] == len(json.loads((out / "predictions.json").read_text()))


def test_draw_uses_the_colour_map_and_the_palette():
    canvas = Image.new("RGB", (120, 90), (128, 128, 128))
    dets = [{"image_id": 1, "category_id": 2, "bbox": [20.0, 40.0, 60.0, 30.0], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 10.0, 10.0], "score": 0.3}]
    out = np.asarray(draw_detections(canvas, dets, {1: "circle", 2: "square"}, {"square": (0, 255, 0)}, 2))
    assert tuple(out[70, 50]) == (0, 255, 0)  # bottom edge of the square's box: its colour
    assert tuple(out[55, 50]) == (128, 128, 128)  # inside the box: untouched
    assert tuple(out[10, 5]) not in ((128, 128, 128), (0, 255, 0))  # the circle's box: a palette colour
    assert (out[28:40, 20:80] != 128).any()  # the label tab above the square's box
    assert np.asarray(canvas).max() == 128  # the input is not drawn on


def bad_run(trained_shapes, tmp_path, capsys, monkeypatch, *overrides):
    def no_model(*_a, **_k):
        raise AssertionError("the model was built before the input was checked")

    monkeypatch.setattr(dino.inference, "load_trained", no_model)
    code = main(["inference", "-e", str(trained_shapes["spec"]), f"inference.results_dir={tmp_path / 'out'}",
                 *overrides])
    return code, capsys.readouterr().err, read_status(tmp_path / "out", "")


def image_dir(path) -> str:
    return f"dataset.infer_data_sources.image_dir=[{path}]"


@pytest.mark.parametrize("case", ["missing_dir", "empty_dir", "bad_classmap", "too_many_names", "bad_colour",
                                  "unknown_colour_class", "threshold", "typo", "json_two_dirs", "corrupt_image",
                                  "json_missing_file"])
def test_bad_input_exits_2_before_the_model_is_built(trained_shapes, tmp_path, capsys, monkeypatch, case):
    val = trained_shapes["data"].val
    (tmp_path / "empty").mkdir()
    (tmp_path / "classes.txt").write_text("circle\n\nsquare\n")
    (tmp_path / "many.txt").write_text("a\nb\nc\nd\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(os.path.join(val.image_dir, sorted(os.listdir(val.image_dir))[0]), broken / "good.jpg")
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    gt = json.loads(open(val.json_file).read())
    gt["images"][0]["file_name"] = "gone.jpg"
    (tmp_path / "gone.json").write_text(json.dumps(gt))
    overrides, message = {
        "missing_dir": ([image_dir(tmp_path / "nope")], "dataset.infer_data_sources.image_dir[0] not found"),
        "empty_dir": ([image_dir(tmp_path / "empty")], "no image files (.jpg"),
        "bad_classmap": ([image_dir(val.image_dir), f"dataset.infer_data_sources.classmap={tmp_path / 'classes.txt'}"],
                         "line 2 is blank"),
        "too_many_names": ([image_dir(val.image_dir), f"dataset.infer_data_sources.classmap={tmp_path / 'many.txt'}"],
                           "names category id 4 ('d') but dataset.num_classes is 3"),
        "bad_colour": ([image_dir(val.image_dir), "inference.color_map={circle: blurple}"],
                       "inference.color_map['circle'] = 'blurple' is not a colour"),
        "unknown_colour_class": ([image_dir(val.image_dir), f"dataset.infer_data_sources.json_file={val.json_file}",
                                  "inference.color_map={squre: red}"], "did you mean 'square'?"),
        "threshold": ([image_dir(val.image_dir), "inference.conf_threshold=1.5"], "must be in [0, 1]"),
        "typo": ([image_dir(val.image_dir), "inference.conf_treshold=0.3"], "did you mean 'inference.conf_threshold'?"),
        "json_two_dirs": ([f"dataset.infer_data_sources.image_dir=[{val.image_dir}, {val.image_dir}]",
                           f"dataset.infer_data_sources.json_file={val.json_file}"], "give one image_dir with json_file"),
        "corrupt_image": ([image_dir(broken)], "1 of 2 files are not readable images"),
        "json_missing_file": ([image_dir(val.image_dir), f"dataset.infer_data_sources.json_file={tmp_path / 'gone.json'}"],
                              "1 of 24 image files listed in json_file are missing"),
    }[case]
    code, err, lines = bad_run(trained_shapes, tmp_path, capsys, monkeypatch, *overrides)
    assert code == 2, err
    assert message in err
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "FAILURE" and message in lines[-1]["message"]
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_no_checkpoint_is_bad_input(trained_shapes, tmp_path, capsys, monkeypatch):
    code, err, _ = bad_run(trained_shapes, tmp_path, capsys, monkeypatch, f"results_dir={tmp_path / 'fresh'}",
                           image_dir(trained_shapes["data"].val.image_dir))
    assert code == 2 and "no checkpoint to run inference with: set inference.checkpoint=" in err


def test_tao_inference_template_loads(tmp_path):
    """TAO's inference section and infer sources parse; what has no meaning here is reported."""
    section = {"num_gpus": 1, "gpu_ids": [0], "num_nodes": 1, "checkpoint": "???", "trt_engine": "",
               "results_dir": "", "batch_size": -1, "conf_threshold": 0.5, "is_internal": False, "input_width": 640,
               "input_height": 640, "outline_width": 3}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"inference": section, "dataset": {"infer_data_sources": {"image_dir": ["/x"],
                                                                                         "classmap": "/c.txt"}}}))
    spec, ignored = load_spec(path)
    assert spec.inference.conf_threshold == 0.5 and spec.inference.outline_width == 3
    assert spec.dataset.infer_data_sources.image_dir == ["/x"] and spec.dataset.infer_data_sources.classmap == "/c.txt"
    assert [i.split(":")[0] for i in ignored] == ["inference.num_nodes", "inference.trt_engine", "inference.is_internal",
                                                  "inference.input_width", "inference.input_height"]


def test_sigterm_stops_inference_with_a_failure_line(trained_shapes, tmp_path):
    """As a launcher stopping the job: SIGTERM to the process group, loader workers included."""
    folder = tmp_path / "many"
    folder.mkdir()
    first = os.path.join(trained_shapes["data"].val.image_dir, sorted(os.listdir(trained_shapes["data"].val.image_dir))[0])
    for k in range(400):
        shutil.copy(first, folder / f"{k:04d}.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "dino", "inference", "-e", str(trained_shapes["spec"]),
                             f"inference.results_dir={tmp_path / 'out'}", image_dir(folder), "inference.batch_size=2",
                             "dataset.workers=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dino_env(),
                            start_new_session=True)
    status = tmp_path / "out" / "status.json"
    deadline = time.time() + 120
    while not (status.exists() and "Inference in progress" in status.read_text()):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no progress line"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    last = read_status(tmp_path / "out", "")[-1]
    assert last["status"] == "FAILURE" and "SIGTERM" in last["message"] and "rerun the same command" in last["message"]
    assert not (tmp_path / "out" / "predictions.json").exists()
