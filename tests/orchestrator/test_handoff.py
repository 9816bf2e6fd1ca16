"""``automl best --evaluate --export --infer`` after a real (tiny) study: the best trial's
checkpoint exported, scored on a held-out set and run on images, through the launcher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from pycocotools.coco import COCO
from rich.console import Console

from automl.cli import main
from automl.study.runner import run_study
from automl.ui.progress import ProgressBoard
from dino.data.synth import generate_dataset

from tiny_study import tiny_study_config


@pytest.mark.slow
def test_handoff_after_a_tiny_study_exports_scores_and_draws(tmp_path, capsys):
    cfg, data = tiny_study_config(tmp_path, "handoff")
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))
    assert outcome.best_trial == 0 and outcome.exported_model is not None and outcome.exported_model.exists()
    trial = optuna.load_study(study_name="handoff", storage=cfg.storage_url).best_trial
    out = tmp_path / "handoff_out"
    code = main(["best", "--workspace", str(cfg.workspace), "--evaluate", str(Path(data.val.image_dir).parent),
                 "--export", str(out), "--infer", data.val.image_dir, "--conf-threshold", "0"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    for name in ("README.md", "model.onnx", "checkpoint.pth", "spec.yaml", "metrics.json", "per_class_ap.json",
                 "predictions.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    # the held-out set here is the study's validation set: the hand-off scores what the trial reported
    status = [json.loads(line) for line in (Path(trial.user_attrs["results_dir"]) / "train" / "status.json")
              .read_text().splitlines()]
    reported = [line for line in status if "epoch" in line and "kpi" in line][-1]["kpi"]
    assert float(reported["val_mAP50"]) > 0  # the comparison means something
    assert metrics["mAP"] == pytest.approx(float(reported["val_mAP"]), abs=1e-4)
    assert metrics["mAP50"] == pytest.approx(float(reported["val_mAP50"]), abs=1e-4)
    gt = COCO(data.val.json_file)
    detections = gt.loadRes(str(out / "predictions.json"))  # the inference output is a COCO result file
    assert len(detections.getAnnIds()) > 0
    pictures = sorted((out / "pictures").iterdir())
    assert 0 < len(pictures) <= 8 and all(p.suffix in (".jpg", ".png") for p in pictures)
    readme = (out / "README.md").read_text()
    assert f"{metrics['mAP50']:.4f}" in readme and "model.onnx" in readme and "trial 0" in readme
    assert "hand-off of trial 0" in printed.out and "test set: mAP" in printed.out


def test_handoff_refuses_a_test_set_with_classes_the_model_does_not_have(tmp_path, capsys):
    import yaml

    from automl.study.attrs import STUDY_METRIC

    ws = tmp_path / "ws"
    trial_dir = ws / "s" / "trial_0000"
    (trial_dir / "train").mkdir(parents=True)
    (trial_dir / "spec.yaml").write_text(yaml.safe_dump({"dataset": {"num_classes": 3}}))
    (trial_dir / "train" / "model_epoch_000_step_1.pth").write_bytes(b"x")
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{ws / 'study.db'}", direction="maximize")
    study.set_user_attr(STUDY_METRIC, "val_mAP50")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={
        "results_dir": str(trial_dir), "spec_path": str(trial_dir / "spec.yaml")}))
    data = generate_dataset(str(tmp_path / "data"), 8, 5, 64, seed=1, val_fraction=0.5)
    code = main(["best", "--workspace", str(ws), "--evaluate", str(Path(data.val.image_dir).parent)])
    err = capsys.readouterr().err
    assert code == 2 and "category id 5" in err and "dataset.num_classes=3" in err
    assert not (ws / "s" / "handoff").exists()  # refused before any job


def test_handoff_tasks_run_on_the_trials_gpu_and_the_export_on_the_cpu(tmp_path):
    """On the H200 the hand-off's evaluate and inference ran on the CPU (no devices asked):
    181 s for 120 images where the GPU takes seconds."""
    from automl.datasets.staging import StagedSplit
    from automl.launchers.base import JobResult
    from automl.study.handoff import BestTrial, hand_over, task_devices
    from automl.study.slots import Slot

    assert task_devices("cuda:2,cuda:3", [0, 1, 2, 3]) == (2,)
    assert task_devices("cuda:5", [0, 1]) == (0,)  # trained elsewhere: this machine's first GPU
    assert task_devices("cpu", [1, 3]) == (1,)
    assert task_devices(None, []) == () and task_devices("cuda:0", []) == ()
    assert Slot.parse(Slot((0, 2)).name) == Slot((0, 2)) and Slot.parse("cpu") == Slot(())  # the attribute's round trip

    jobs = []

    class Handle:
        def __init__(self, job):
            self.job = job

        def wait(self, timeout=None):
            return JobResult(exit_code=1)

        def stop(self, grace_period=10.0):
            return JobResult(exit_code=143, stopped=True)

    class Launcher:
        name = "fake"

        def launch(self, job):
            jobs.append(job)
            return Handle(job)

    spec, ckpt = tmp_path / "spec.yaml", tmp_path / "train" / "best.pth"
    ckpt.parent.mkdir()
    spec.write_text("dataset: {num_classes: 2}\n")
    ckpt.write_bytes(b"x")
    images = tmp_path / "images"
    images.mkdir()
    best = BestTrial("s", 0, "val_mAP50", 0.5, {}, spec, ckpt, trained_on="cuda:1")
    split = StagedSplit(image_dir=images, json_file=tmp_path / "a.json")
    out = hand_over(best, tmp_path / "h", Launcher(), ["dino", "train"], test_split=split, images=images,
                    devices=task_devices(best.trained_on, [0, 1]))
    by_task = {job.command[1]: job.devices for job in jobs}
    assert by_task == {"export": (), "evaluate": (1,), "inference": (1,)}
    assert len(out.problems) == 3  # every task failed here, and each says so
