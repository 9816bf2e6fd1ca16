"""Once every trial of the budget has started, the best trial so far is handed over
(export and pictures) while the last trials still run, and the end of the study takes
that result when the best did not change; a newer best is handed over after it."""

import io
import os

import optuna
from rich.console import Console

from automl.config import build_run_config
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_command, scripted_config


def _run(tmp_path, coco_dirs, monkeypatch, lrs, slow_lr):
    """Three trials, two at a time; the trial of ``slow_lr`` trains 8x longer an epoch."""
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.15")
    monkeypatch.setenv("SCRIPTED_SLOW_LR", str(slow_lr))
    raw = scripted_config(tmp_path, coco_dirs, pruner={"name": "none"}, budget={"n_trials": len(lrs)},
                          devices={"use": "cpu", "trials_per_slot": 2},
                          fixed={"train.num_epochs": 4, "dataset.batch_size": 2},
                          trainer={"command": scripted_command(), "space": str(tmp_path / "space.yaml")})
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    study = open_study(cfg)
    for lr in lrs:
        study.enqueue_trial({"train.optim.lr": lr})
    printed = io.StringIO()
    outcome = run_study(cfg, ProgressBoard(Console(file=printed, width=200)))
    trials = optuna.load_study(study_name="scripted", storage=cfg.storage_url).trials
    return outcome, trials, printed.getvalue(), tmp_path / "ws" / "scripted"


def test_the_best_is_exported_while_the_last_trial_still_trains(tmp_path, coco_dirs, monkeypatch):
    # trial 0 (the best lr) and 2 finish fast; trial 1 trains long: when 2 ends, every
    # trial has started and trial 0 is handed over beside trial 1
    outcome, trials, printed, ws = _run(tmp_path, coco_dirs, monkeypatch, lrs=(3e-4, 1e-4, 2e-4), slow_lr=1e-4)
    assert outcome.best_trial == 0 and trials[1].value < trials[0].value  # precondition
    exported = outcome.exported_model
    assert exported == (ws / "best_model.onnx").resolve()
    assert exported.read_text().startswith("exported trial_0000/")
    # written before the last trial ended, and only once
    assert os.path.getmtime(exported) < trials[1].datetime_complete.timestamp()
    assert printed.count("exporting trial 0's checkpoint") == 1, printed
    assert "handing the best so far (trial 0) over ahead" in printed
    assert printed.index("handing the best so far (trial 0)") < printed.index("trial 1 completed")


def test_a_later_best_is_handed_over_after_the_early_one(tmp_path, coco_dirs, monkeypatch):
    # the slow trial 1 is the best: trial 0 is handed over ahead first, then trial 1 when it ends
    outcome, trials, printed, ws = _run(tmp_path, coco_dirs, monkeypatch, lrs=(1e-4, 3e-4, 5e-5), slow_lr=3e-4)
    assert outcome.best_trial == 1 and trials[1].value > trials[0].value  # precondition
    assert outcome.exported_model.read_text().startswith("exported trial_0001/")
    assert printed.count("exporting trial 0's checkpoint") == 1 and printed.count("exporting trial 1's checkpoint") == 1
    assert printed.index("exporting trial 0's") < printed.index("exporting trial 1's")
