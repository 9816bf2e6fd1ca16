"""A real (tiny) study through the real CLI ends with its story on the terminal and the best
trial's detections drawn beside the ground truth, from its trained checkpoint; ``automl
report`` keeps those pictures while the checkpoint is the same and redraws on request."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image
from quirky_data import COLORS, write_quirky_split

from automl.cli import main
from automl.launchers import LAUNCHERS
from automl.study.showcase import MAX_DRAWN, Showcase, make_showcase
from dino.draw import class_color

from orchestrator_utils import SCRIPTED, scripted_config, write_coco
from scripted_trainer import SCRIPTED_DETECTION
from tiny_study import tiny_study_raw

THRESHOLD = 0.05  # a one-epoch model scores low; this keeps a few of its detections to draw
PANEL = 320  # the 64-pixel images are enlarged to this
GAP = 12


def _pixel(picture: np.ndarray, panel: int, x: float, y: float) -> tuple[int, ...]:
    """The colour 2 pixels inside the left edge of a box whose corner is (x, y) in image pixels."""
    factor = PANEL / 64
    top = picture.shape[0] - GAP - PANEL
    return tuple(int(v) for v in picture[top + int(y * factor), GAP + panel * (PANEL + GAP) + int(x * factor) + 2])


@pytest.mark.slow
def test_a_tiny_study_ends_with_its_story_and_pictures_of_the_best_model(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    raw, data = tiny_study_raw(tmp_path, "pictures", epochs=1)
    raw["export"] = {"enabled": False}
    raw["report"] = {"predictions": 3, "conf_threshold": THRESHOLD}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(["run", "--config", str(config)])
    printed = capsys.readouterr().out
    assert code == 0, printed

    ws = tmp_path / "ws"
    trial = optuna.load_study(study_name="pictures", storage=f"sqlite:///{ws / 'study.db'}").best_trial
    report_dir = ws / "pictures" / "report"
    folder = report_dir / "predictions"
    closing = printed[printed.index("automl done in"):].splitlines()
    assert re.fullmatch(r"automl done in \d+ s: 1 trial\(s\), 1 complete, 0 pruned, 0 failed; 0 learned", closing[0])
    assert f"automl best: trial 0, val_mAP50 {trial.value:.4f} (best epoch 0)" in closing
    assert ("automl importances left out: only 1 finished trial(s) with a reported val_mAP50; "
            "they need at least 5") in closing
    assert (f"automl pictures: {folder} (3 validation images, ground truth beside trial 0's detections with "
            f"score >= {THRESHOLD:.2f})") in closing
    assert f"automl report: {report_dir / 'report.html'}" in closing

    # the pictures: the first 3 validation images, from the checkpoint the study hands back
    showcase = Showcase.load(folder)
    assert showcase is not None and showcase.ok and showcase.trial == 0
    assert showcase.checkpoint == json.loads((ws / "pictures" / "best.json").read_text())["checkpoint"]
    coco = json.loads(Path(data.val.json_file).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    first = sorted(coco["images"], key=lambda im: im["id"])[:3]
    assert [p.image_id for p in showcase.pictures] == [im["id"] for im in first]
    predictions = json.loads((folder / "job" / "inference" / "predictions.json").read_text())
    checked = 0
    for pic in showcase.pictures:
        truth = [a for a in coco["annotations"] if a["image_id"] == pic.image_id]
        dets = sorted((d for d in predictions if d["image_id"] == pic.image_id), key=lambda d: -d["score"])
        assert pic.ground_truth == len(truth) >= 1
        assert pic.shown == min(MAX_DRAWN, sum(d["score"] >= THRESHOLD for d in dets))
        assert pic.top_score == pytest.approx(dets[0]["score"])
        picture = np.asarray(Image.open(pic.path).convert("RGB"))
        assert picture.shape[1] == 2 * PANEL + 3 * GAP and picture.shape[0] > PANEL
        for a in truth:  # ground truth on the left, in its class's colour
            x, y, w, h = a["bbox"]
            assert _pixel(picture, 0, x, y + h / 2) == class_color(a["category_id"], names[a["category_id"]], {})
        x, y, w, h = dets[0]["bbox"]  # the most confident detection is drawn last, on top
        if pic.shown and 0 <= x <= 60 and 0 <= y + h / 2 < 64:
            cat = dets[0]["category_id"]
            assert _pixel(picture, 1, x, y + h / 2) == class_color(cat, names[cat], {})
            checked += 1
    assert checked >= 1, "no detection was drawn inside an image: the check above compared nothing"
    page = (report_dir / "report.html").read_text()
    for pic in showcase.pictures:
        assert f'<img src="predictions/{pic.path.name}"' in page
    assert f"trial #0's detections with score &ge; {THRESHOLD:.2f}" in page

    # automl report keeps the pictures of the same checkpoint, and redraws when asked for another count
    manifest = folder / "showcase.json"
    before = manifest.stat().st_mtime_ns
    assert main(["report", "--workspace", str(ws)]) == 0
    again = capsys.readouterr()
    assert manifest.stat().st_mtime_ns == before and "drawing" not in again.err
    assert f"pictures: {folder} (3 validation images" in again.out
    assert main(["report", "--workspace", str(ws), "--predictions", "2"]) == 0
    redrawn = capsys.readouterr()
    assert "drawing trial 0's detections on 2 validation images (dino inference, launcher local)" in redrawn.err
    two = Showcase.load(folder)
    assert two is not None and [p.image_id for p in two.pictures] == [im["id"] for im in first[:2]]
    assert two.conf_threshold == THRESHOLD  # kept from the run's pictures
    assert not (folder / f"val_{first[2]['id']}.png").exists()
    assert f'src="predictions/val_{first[2]["id"]}.png"' not in (report_dir / "report.html").read_text()


def test_scripted_study_closing_lines_and_pictures_through_the_cli(tmp_path, capsys, monkeypatch):
    """The scripted trainer's study (known curves, pruning, one known detection per image):
    the closing lines through ``automl run``, and the pictures' left panels show the
    annotations while the right ones show the detections."""
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.1")
    train, val = write_coco(tmp_path / "train"), write_coco(tmp_path / "val")
    raw = scripted_config(tmp_path, (train, val), budget={"n_trials": 8}, sampler={"name": "random", "seed": 3},
                          trainer={"command": [sys.executable, str(SCRIPTED), "train"]},
                          export={"enabled": False}, report={"predictions": 3})
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["run", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    closing = printed[printed.index("automl done in"):].splitlines()

    study = optuna.load_study(study_name="scripted", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(trials) == 8  # the test means something only with pruned trials
    # the learned rule, computed here from the stored curves
    start = statistics.median(t.intermediate_values[min(t.intermediate_values)] for t in trials)
    best = study.best_trial
    threshold = start + 0.5 * (best.value - start)
    scores = {t.number: t.value if t.value is not None else max(t.intermediate_values.values()) for t in trials}
    learned = [n for n, v in scores.items() if v >= threshold]
    assert closing[0].startswith("automl done in ") and closing[0].endswith(
        f"8 trial(s), {8 - len(pruned)} complete, {len(pruned)} pruned, 0 failed; {len(learned)} learned")
    assert closing[1].startswith(f"automl learned: {', '.join(f'#{n}' for n in learned)} (val_mAP50 >= "
                                 f"{threshold:.3g}, halfway from the typical first epoch ({start:.3g})")
    by_epoch: dict[int, list[int]] = {}
    for t in pruned:
        by_epoch.setdefault(t.user_attrs["prune_epoch"], []).append(t.number)
    expected = "; ".join(f"{len(ns)} at epoch {e} ({', '.join(f'#{n}' for n in ns)})" for e, ns in sorted(by_epoch.items()))
    assert closing[2] == (f"automl pruned {len(pruned)} by median (warmup_epochs=2, startup_trials=1): {expected}")
    assert f"automl best: trial {best.number}, val_mAP50 {best.value:.4f}" in closing[3]

    folder = tmp_path / "ws" / "scripted" / "report" / "predictions"
    assert closing[5] == (f"automl pictures: {folder} (3 validation images, ground truth beside trial "
                          f"{best.number}'s detections with score >= 0.30)")
    showcase = Showcase.load(folder)
    assert showcase is not None and [p.image_id for p in showcase.pictures] == [1, 2, 3]
    coco = json.loads((val / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for pic in showcase.pictures:
        (truth,) = [a for a in coco["annotations"] if a["image_id"] == pic.image_id]
        assert (pic.ground_truth, pic.shown, pic.top_score) == (1, 1, SCRIPTED_DETECTION["score"])
        picture = np.asarray(Image.open(pic.path).convert("RGB"))
        factor, panel = 10, 320  # 32-pixel images enlarged to 320
        top = picture.shape[0] - GAP - panel

        def at(k: int, x: float, y: float) -> tuple[int, ...]:
            return tuple(int(v) for v in picture[top + int(y * factor), GAP + k * (panel + GAP) + int(x * factor) + 2])

        x, y, w, h = truth["bbox"]
        assert at(0, x, y + h / 2) == class_color(truth["category_id"], names[truth["category_id"]], {})
        x, y, w, h = SCRIPTED_DETECTION["bbox"]
        cat = SCRIPTED_DETECTION["category_id"]
        assert at(1, x, y + h / 2) == class_color(cat, names[cat], {})


def test_ground_truth_drawn_is_the_box_a_person_sees(tmp_path):
    """Validation images with what real exports contain (EXIF-rotated JPEGs, a file at half
    the annotated size, a zero-area box, a box past the border): the left panel shows the
    image as displayed with each object's true box, in its class's colour."""
    val = write_quirky_split(tmp_path / "val", n_plain=1)
    spec = tmp_path / "trial" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({"dataset": {"val_data_sources": [
        {"image_dir": str(val.image_dir), "json_file": str(val.json_file)}]}}))
    checkpoint = tmp_path / "trial" / "train" / "model_epoch_000_step_1.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    launcher = LAUNCHERS.build("local", {"registry_dir": str(tmp_path / "jobs")})
    showcase = make_showcase(study_name="quirky", trial=0, spec=spec, checkpoint=checkpoint, launcher=launcher,
                             train_command=[sys.executable, str(SCRIPTED), "train"], folder=tmp_path / "predictions",
                             images=len(val.ids))
    assert showcase.ok, showcase.problem
    by_id = {p.image_id: p for p in showcase.pictures}
    assert set(by_id) == set(val.ids.values())
    names = {1: "red", 2: "blue"}
    for name, truth in val.truth.items():
        pic = by_id[val.ids[name]]
        assert pic.ground_truth == len(truth), name  # the zero-area box is not drawn
        picture = np.asarray(Image.open(pic.path).convert("RGB")).astype(int)
        shown_w, shown_h = (64, 80) if name == "exif6.jpg" else (64, 64)  # as displayed
        factor = PANEL / min(shown_w, shown_h)
        top = picture.shape[0] - GAP - round(shown_h * factor)
        for cat, (x0, y0, x1, y1) in truth:
            row = top + int((y0 + y1) / 2 * factor)
            edge = picture[row, GAP + int(x0 * factor) + 2]
            assert tuple(edge) == class_color(cat, names[cat], {}), (name, cat)
            inside = picture[row, GAP + int((x0 + x1) / 2 * factor)]  # the painted object, right side up
            assert np.abs(inside - np.array(COLORS[cat])).max() < 40, (name, cat, inside)
