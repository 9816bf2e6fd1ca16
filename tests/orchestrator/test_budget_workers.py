"""``n_trials`` is an exact budget across workers, and one worker exports: two real
``automl run`` processes on one study, on SQLite and on the real PostgreSQL server."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from automl.study.budget import may_start, shares_held

from orchestrator_utils import scripted_command, scripted_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def _two_workers(tmp_path, coco_dirs, storage: str | None, n_trials: int):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": n_trials}, pruner={"name": "none"},
                          fixed={"train.num_epochs": 3, "dataset.batch_size": 2},
                          trainer={"command": scripted_command(), "space": str(tmp_path / "space.yaml")},
                          sampler={"name": "tpe", "seed": 0, "n_startup_trials": 2})
    if storage:
        raw["study"]["storage"] = storage
    config = write_config(tmp_path, raw)
    env = {**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.3"}
    workers = [subprocess.Popen([sys.executable, "-m", "automl", "run", "--config", str(config)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    url = storage or f"sqlite:///{tmp_path / 'ws' / 'study.db'}"
    return optuna.load_study(study_name="scripted", storage=url), outputs


def _check(study, outputs, tmp_path, n_trials):
    trials = study.get_trials()
    assert len(trials) == n_trials, [(t.number, t.state) for t in trials]  # not one more
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    exporting = [out for out in outputs if "exporting trial" in out]
    assert len(exporting) == 1, outputs  # one export ...
    other = next(out for out in outputs if out is not exporting[0])
    assert "no export by this worker" in other  # ... and the other says why it did not
    best = study.best_trial
    onnx = tmp_path / "ws" / "scripted" / "best_model.onnx"
    assert onnx.read_text().startswith(f"exported trial_{best.number:04d}/")  # the final best, not an earlier one
    record = study.user_attrs["best_export"]
    assert record["trial"] == best.number and record["state"] == "done" and record["path"] == str(onnx.resolve())


def test_two_workers_on_sqlite_run_exactly_n_trials(tmp_path, coco_dirs):
    study, outputs = _two_workers(tmp_path, coco_dirs, None, 5)
    _check(study, outputs, tmp_path, 5)


@pytest.mark.postgres
def test_two_workers_on_postgres_run_exactly_n_trials(tmp_path, coco_dirs, pg_url):
    study, outputs = _two_workers(tmp_path, coco_dirs, pg_url, 5)
    _check(study, outputs, tmp_path, 5)


def _trial(state, number_of_failed=None, retried=()):
    system = {}
    if number_of_failed is not None:
        system = {"failed_trial": number_of_failed, "retry_history": [*retried, number_of_failed]}
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                        system_attrs=system)


def test_a_queued_retry_keeps_its_share():
    """An interrupted trial (FAIL) is superseded by its queued retry, which holds the
    share: another worker may not spend it on a new trial, the retry itself may start."""
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.COMPLETE))
    study.add_trial(_trial(TrialState.FAIL))  # trial 1, interrupted
    study.add_trial(_trial(TrialState.WAITING, number_of_failed=1))  # its retry, at the head of the queue
    assert shares_held(study.get_trials()) == 2
    assert may_start(study.get_trials(), 2)  # the next ask pops the retry: allowed
    study.add_trial(_trial(TrialState.WAITING))  # a point enqueued behind it
    assert may_start(study.get_trials(), 2)


def test_a_new_trial_needs_a_share_left():
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.COMPLETE))
    study.add_trial(_trial(TrialState.RUNNING))  # another worker's, holding its share
    study.add_trial(_trial(TrialState.WAITING))  # an enqueued point, no share yet
    assert shares_held(study.get_trials()) == 2
    assert not may_start(study.get_trials(), 2) and may_start(study.get_trials(), 3)


def test_failed_trials_count_and_waiting_points_do_not():
    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        study.add_trial(_trial(state))
    trials = study.get_trials()
    assert shares_held(trials) == 4
    assert may_start(trials, 5) and not may_start(trials, 4)
