"""A hung trial, a trial past its time and a metric that never comes, with real jobs:
each is stopped early, with a diagnosis, and the metric case stops the study."""

import os
import time

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from automl.config import build_run_config
from automl.study.runner import run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_config


def _run(tmp_path, coco_dirs, monkeypatch, env=None, budget=None, **over):
    for key, value in {"SCRIPTED_EPOCH_SECONDS": "0.3", **(env or {})}.items():
        monkeypatch.setenv(key, value)
    raw = scripted_config(tmp_path, coco_dirs, pruner={"name": "none"},
                          budget={"n_trials": 1, "max_consecutive_failures": 3, **(budget or {})}, **over)
    raw.setdefault("fixed", {})
    raw["fixed"] = {"train.num_epochs": 20, "dataset.batch_size": 2, **raw["fixed"]}
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    t0 = time.monotonic()
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    log = (tmp_path / "ws" / "scripted" / "trial_0000" / "stdout.log").read_text()
    return outcome, study, log, time.monotonic() - t0


def _gone(trial):
    with pytest.raises(ProcessLookupError):
        os.kill(int(trial.user_attrs["job_id"]), 0)


def test_a_hung_trial_is_stopped_by_the_stall_limit(tmp_path, coco_dirs, monkeypatch):
    outcome, study, log, took = _run(tmp_path, coco_dirs, monkeypatch, env={"SCRIPTED_HANG_AT_EPOCH": "2"},
                                     budget={"stall_timeout_s": 1.5})
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_code"] == "stalled"
    assert "wrote nothing to stdout.log or status.json for" in trial.user_attrs["failure"]
    assert "after finishing epoch 1" in trial.user_attrs["failure"]
    assert sorted(trial.intermediate_values) == [0, 1]  # what it reported stays
    _gone(trial)
    assert took < 30


def test_a_trial_past_its_wall_clock_limit_is_stopped(tmp_path, coco_dirs, monkeypatch):
    outcome, study, log, took = _run(tmp_path, coco_dirs, monkeypatch, budget={"trial_timeout_s": 1.5})
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_code"] == "trial_timeout"
    assert "past budget.trial_timeout_s (2 s)" in trial.user_attrs["failure"]  # 1.5 s, rounded
    assert 1 <= log.count("TRAINED EPOCH") < 20
    _gone(trial)


@pytest.mark.parametrize("interval, first", [(1, 0), (3, 2)])
def test_a_metric_missing_after_the_first_validation_fails_at_once_and_stops_the_study(
        tmp_path, coco_dirs, monkeypatch, interval, first):
    outcome, study, log, took = _run(tmp_path, coco_dirs, monkeypatch, budget={"n_trials": 3},
                                     metric={"name": "val_mAP75", "direction": "maximize"},
                                     fixed={"train.validation_interval": interval})
    (trial,) = study.trials  # the study stopped: the two other trials never started
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_code"] == "metric_missing"
    failure = trial.user_attrs["failure"]
    assert f"epoch {first} (the first validated one is {first}) ended" in failure
    assert "metric 'val_mAP75' never appeared" in failure and "val_mAP50" in failure  # what it did see
    assert "val_mAP50" in trial.user_attrs["failure_fix"]
    trained = log.count("TRAINED EPOCH")
    assert first + 1 <= trained <= first + 3, log  # not 20
    assert outcome.exit_code == 3 and "every trial would repeat" in outcome.failure_summary
    _gone(trial)


def test_limits_are_validated_when_the_config_is_read(tmp_path, coco_dirs):
    from automl.errors import ConfigError

    raw = scripted_config(tmp_path, coco_dirs, budget={"stall_timeout_s": 0.3})  # poll_interval 0.1
    with pytest.raises(ConfigError, match=r"budget.stall_timeout_s \(0.3 s\) must be at least 5 x launcher.poll"):
        build_run_config(raw, use_cpu_variant=False, where="test")
    with pytest.raises(ConfigError, match="budget.trial_timeout_s"):
        build_run_config(scripted_config(tmp_path, coco_dirs, budget={"trial_timeout_s": 0}),
                         use_cpu_variant=False, where="test")
