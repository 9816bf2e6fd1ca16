"""The study loop end to end with real processes: pruning stops running jobs, a
failing trial is diagnosed while the study goes on, every epoch is reported."""

import os
import time

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from automl.config import build_run_config
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_config


def _board():
    return ProgressBoard(Console(file=open(os.devnull, "w")), metric="val_mAP50")


def _enqueue(cfg, lrs):
    study = open_study(cfg)
    for lr in lrs:
        study.enqueue_trial({"train.optim.lr": lr})
    return study


def test_pruned_jobs_are_stopped_and_failures_diagnosed(tmp_path, coco_dirs, monkeypatch):
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.5")
    cfg = build_run_config(scripted_config(tmp_path, coco_dirs, fixed={"train.num_epochs": 6, "dataset.batch_size": 2},
                                           budget={"n_trials": 4}), use_cpu_variant=False, where="test")
    # good, weak (pruned), failing (lr beyond the space: fixed through enqueue), better
    _enqueue(cfg, [2e-4, 1e-5, 5e-2, 3e-4])
    t0 = time.monotonic()
    outcome = run_study(cfg, _board())
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]

    good, weak, failed, good2 = trials
    assert sorted(good.intermediate_values) == list(range(6))  # every epoch reported
    assert outcome.best_trial == 3 and outcome.best_value == pytest.approx(max(good2.intermediate_values.values()))

    # the pruned job was stopped early: it trained fewer than 6 epochs and its process is gone
    assert weak.user_attrs["prune_epoch"] == 1  # 2 epochs reported = the warm-up
    log = (tmp_path / "ws" / "scripted" / "trial_0001" / "stdout.log").read_text()
    assert log.count("TRAINED EPOCH") < 6
    with pytest.raises(ProcessLookupError):
        os.kill(int(weak.user_attrs["job_id"]), 0)

    # the failure is diagnosed from the log and stored on the trial
    assert failed.user_attrs["failure_code"] == "cuda_oom"
    assert "batch_size" in failed.user_attrs["failure_fix"]
    assert "CUDA out of memory" in failed.user_attrs["log_tail"]

    # outputs a person wants
    ws = tmp_path / "ws" / "scripted"
    assert (ws / "best_spec.yaml").exists() and (ws / "best.json").exists()
    assert (ws / "report" / "report.html").exists()
    assert time.monotonic() - t0 < 60


def test_consecutive_failures_stop_the_study_with_a_summary(tmp_path, coco_dirs):
    cfg = build_run_config(scripted_config(tmp_path, coco_dirs, budget={"n_trials": 6, "max_consecutive_failures": 2}),
                           use_cpu_variant=False, where="test")
    _enqueue(cfg, [5e-2, 6e-2, 7e-2])
    outcome = run_study(cfg, _board())
    assert outcome.exit_code == 3
    assert "2 consecutive failed trials" in outcome.failure_summary
    assert "batch_size" in outcome.failure_summary
    assert outcome.counts["fail"] == 2  # the third queued trial never ran


def test_metric_that_never_appears_says_what_the_extractor_saw(tmp_path, coco_dirs):
    cfg = build_run_config(scripted_config(tmp_path, coco_dirs, metric={"name": "val_mAP75", "direction": "maximize"},
                                           budget={"n_trials": 1}, fixed={"train.num_epochs": 2, "dataset.batch_size": 2}),
                           use_cpu_variant=False, where="test")
    run_study(cfg, _board())
    trial = optuna.load_study(study_name="scripted", storage=cfg.storage_url).trials[0]
    assert trial.state == TrialState.FAIL
    assert "val_mAP75" in trial.user_attrs["failure"] and "val_mAP50" in trial.user_attrs["failure"]


def test_budget_counts_the_whole_study_across_runs(tmp_path, coco_dirs):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2}, fixed={"train.num_epochs": 2, "dataset.batch_size": 2})
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    run_study(cfg, _board())
    run_study(cfg, _board())  # nothing left to do
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    assert len(study.trials) == 2
