"""A study's metric, direction and aggregate are fixed at creation: a rerun that asks for
others is refused (it used to go on maximising val_loss, and retention, sorting the
other way, deleted the best trial's checkpoints)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from automl.config import build_run_config
from automl.errors import ConfigError
from automl.study.identity import fix_identity
from automl.study.results import apply_retention
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, coco_dirs, **metric):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 1}, fixed={"train.num_epochs": 2, "dataset.batch_size": 2})
    if metric:
        raw["metric"] = metric
    return build_run_config(raw, use_cpu_variant=False, where="test")


def test_a_rerun_with_another_metric_is_refused_with_a_new_name(tmp_path, coco_dirs):
    run_study(_cfg(tmp_path, coco_dirs), ProgressBoard(Console(file=open(os.devnull, "w"))))
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2}, metric={"name": "val_loss"})
    proc = subprocess.run([sys.executable, "-m", "automl", "run", "--config", str(write_config(tmp_path, raw))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "study 'scripted'" in err and "was created to maximize val_mAP50" in err
    assert "this run asks to minimize val_loss" in err and "--study-name scripted-val_loss" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="scripted", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    assert len(study.trials) == 1  # nothing ran


@pytest.mark.parametrize("metric, what", [
    ({"name": "val_mAP50", "direction": "minimize"}, "direction maximize -> minimize"),
    ({"name": "val_mAP50", "aggregate": "last"}, "metric.aggregate 'best' -> 'last'"),
    ({"name": "val_mAP"}, "metric.name 'val_mAP50' -> 'val_mAP'"),
])
def test_each_part_is_fixed(tmp_path, coco_dirs, metric, what):
    fix_identity(open_study(_cfg(tmp_path, coco_dirs)), _cfg(tmp_path, coco_dirs))
    changed = _cfg(tmp_path, coco_dirs, **metric)
    with pytest.raises(ConfigError) as err:
        fix_identity(open_study(changed), changed)
    assert what in str(err.value)


def test_the_same_metric_resumes_and_an_old_study_is_adopted(tmp_path, coco_dirs):
    cfg = _cfg(tmp_path, coco_dirs)
    study = open_study(cfg)
    assert "metric" not in study.user_attrs  # as a study made before identities were recorded
    fix_identity(study, cfg)
    assert study.user_attrs["metric"] == "val_mAP50" and study.user_attrs["aggregate"] == "best"
    fix_identity(open_study(cfg), cfg)  # a rerun of the same config is fine


def test_retention_ranks_the_way_the_study_does(tmp_path):
    """Even when called with a config that says otherwise, the study's stored direction
    decides which trials keep their checkpoints."""
    study = optuna.create_study(direction="minimize")
    for number, loss in enumerate([0.9, 0.1, 0.5]):
        results = tmp_path / f"trial_{number}"
        (results / "train").mkdir(parents=True)
        (results / "train" / "model_best.pth").write_text("x")
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=loss, params={"x": 0.5},
                                     distributions={"x": FloatDistribution(0, 1)},
                                     user_attrs={"results_dir": str(results)}))
    removed = apply_retention(study, keep_best=1)
    assert sorted(p.parent.parent.name for p in removed) == ["trial_0", "trial_2"]
    assert (tmp_path / "trial_1" / "train" / "model_best.pth").exists()
