"""Two worker processes share one study through the real PostgreSQL server."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from orchestrator_utils import scripted_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_two_workers_one_study_no_duplicates(tmp_path, coco_dirs, pg_url):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 6}, fixed={"train.num_epochs": 3, "dataset.batch_size": 2},
                          sampler={"name": "tpe", "seed": 0, "n_startup_trials": 2})  # one config, one seed
    raw["study"]["storage"] = pg_url
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.4"}
    workers = [subprocess.Popen([sys.executable, "-m", "automl", "run", "--config", str(config)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="scripted", storage=pg_url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # the budget is the study's and exact: a trial starts only while a share is left
    assert len(finished) == len(trials) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["results_dir"] for t in trials}) == len(trials)  # no shared work dirs
    assert len({t.params["train.optim.lr"] for t in trials}) == len(trials)  # no duplicated points
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers did work
