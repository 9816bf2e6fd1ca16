"""Best means best: the checkpoint handed back for the best trial (best.json, the export,
``automl best``, retention) is the one of the epoch its value comes from, also when
``train.checkpoint_interval`` kept no file of that epoch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from rich.console import Console

from automl.config import build_run_config
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_command, scripted_config

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, coco_dirs, monkeypatch, *, fixed=None, metric=None, lrs=(3e-4, 1e-4)):
    """Two trials of 6 epochs whose values drop by half from epoch 3 (best epoch: 2), with
    checkpoints only every 10 epochs (and the last), retention keeping the best trial's."""
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.1")
    monkeypatch.setenv("SCRIPTED_DIP_FROM", "3")
    raw = scripted_config(tmp_path, coco_dirs, pruner={"name": "none"}, budget={"n_trials": len(lrs)},
                          fixed={"train.num_epochs": 6, "dataset.batch_size": 2, "train.checkpoint_interval": 10,
                                 **(fixed or {})},
                          trainer={"command": scripted_command(), "space": str(tmp_path / "space.yaml")},
                          retention={"keep_checkpoints_of_best": 1}, **({"metric": metric} if metric else {}))
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    study = open_study(cfg)
    for lr in lrs:
        study.enqueue_trial({"train.optim.lr": lr})
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))
    ws = tmp_path / "ws" / "scripted"
    return cfg, outcome, json.loads((ws / "best.json").read_text()), ws


def test_the_best_epochs_checkpoint_is_kept_reported_and_exported(tmp_path, coco_dirs, monkeypatch):
    cfg, outcome, best, ws = _run(tmp_path, coco_dirs, monkeypatch)
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    trial = study.trials[0]
    curve = trial.intermediate_values
    assert max(curve, key=curve.get) == 2 and max(curve) == 5  # precondition: the best epoch is not the last
    assert outcome.best_trial == 0 and trial.value == curve[2]
    train = ws / "trial_0000" / "train"
    assert best["value_epoch"] == 2 and best["checkpoint_epoch"] == 2 and best["checkpoint_is_value_epoch"]
    assert best["checkpoint"] == str(train / "model_best.pth") and best["checkpoint_note"] is None
    assert (train / "model_best.pth").read_text() == "epoch 2"
    assert outcome.best_checkpoint == train / "model_best.pth"
    # the export is of that checkpoint
    assert outcome.exported_model == (ws / "best_model.onnx").resolve()
    assert outcome.exported_model.read_text() == "exported trial_0000/model_best.pth: epoch 2"
    # retention kept it (and the rest of the best trial's), removed the other trial's
    assert sorted(p.name for p in train.glob("*.pth")) == ["dino_model_latest.pth", "model_best.pth",
                                                          "model_epoch_005_step_60.pth"]
    assert not list((ws / "trial_0001" / "train").glob("*.pth"))
    # automl best says the same
    proc = subprocess.run([sys.executable, "-m", "automl", "best", "--json", "--workspace", str(tmp_path / "ws")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["checkpoint"] == best["checkpoint"] and shown["checkpoint_epoch"] == 2 and shown["value_epoch"] == 2


def test_without_a_kept_best_epoch_the_results_say_so(tmp_path, coco_dirs, monkeypatch):
    """A trainer that keeps no model_best.pth (train.best_checkpoint_metric ''): the
    newest checkpoint is handed back, marked as not the value's epoch, never silently."""
    cfg, outcome, best, ws = _run(tmp_path, coco_dirs, monkeypatch, fixed={"train.best_checkpoint_metric": ""})
    assert best["value_epoch"] == 2 and best["checkpoint_epoch"] == 5 and not best["checkpoint_is_value_epoch"]
    assert "no checkpoint kept for epoch 2" in best["checkpoint_note"]
    assert best["checkpoint"].endswith("model_epoch_005_step_60.pth")


def test_aggregate_last_takes_the_last_epochs_checkpoint(tmp_path, coco_dirs, monkeypatch):
    cfg, outcome, best, ws = _run(tmp_path, coco_dirs, monkeypatch,
                                  metric={"name": "val_mAP50", "aggregate": "last"})
    assert best["value_epoch"] == 5 and best["checkpoint_is_value_epoch"]
    assert best["checkpoint"].endswith("model_epoch_005_step_60.pth")


def test_the_trainer_is_told_the_studys_metric(tmp_path, coco_dirs, monkeypatch):
    """Minimising val_loss: model_best.pth follows val_loss, and it is what best.json names."""
    cfg, outcome, best, ws = _run(tmp_path, coco_dirs, monkeypatch, metric={"name": "val_loss"})
    spec = yaml.safe_load((ws / "trial_0000" / "spec.yaml").read_text())
    assert spec["train"]["best_checkpoint_metric"] == "val_loss"
    record = json.loads((ws / "trial_0000" / "train" / "model_best.json").read_text())
    assert record["metric"] == "val_loss" and record["epoch"] == 2
    assert best["checkpoint"].endswith("model_best.pth") and best["checkpoint_epoch"] == 2


@pytest.mark.parametrize("metric, direction, expected", [
    ("val_mAP50", "maximize", "val_mAP50"),
    ("val_loss", "minimize", "val_loss"),
    ("val_loss", "maximize", None),  # ranked the other way than the trainer would: not set
    ("val_mAP75", "maximize", None),  # not a metric the trainer validates
])
def test_which_metric_the_trainer_keeps_its_best_for(metric, direction, expected):
    from automl.search_space import TrainSchema, default_schema_path
    from automl.study.best_checkpoint import best_checkpoint_assignments

    got = best_checkpoint_assignments(metric, direction, TrainSchema.load(default_schema_path()))
    assert got == ({"train.best_checkpoint_metric": expected} if expected else {})
