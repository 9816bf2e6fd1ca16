"""A whole study with the Docker launcher: every trial a container of the trainer image,
pruned trials' containers stopped within 10 s of the decision, none left at the end."""

from __future__ import annotations

import os
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from test_docker_trainer import TINY_AUGMENTATION, TINY_MODEL, shapes  # noqa: F401 (fixture)

from automl.config import build_run_config
from automl.launchers.docker import DockerJob
from automl.study.runner import run_study
from automl.ui.progress import ProgressBoard

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_study_in_containers_prunes_promptly_and_leaves_nothing(docker_client, study, shapes, tmp_path, monkeypatch):
    stops: list[float] = []
    real_stop = DockerJob.stop

    def timed_stop(self, grace_period=10.0):
        t0 = time.monotonic()
        result = real_stop(self, grace_period)
        stops.append(time.monotonic() - t0)
        return result

    monkeypatch.setattr(DockerJob, "stop", timed_stop)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.chmod(tmp_path, 0o755)  # the container user reads the results dirs under it
    fixed = {f"model.{k}": v for k, v in TINY_MODEL.items()}
    fixed.update({f"dataset.augmentation.{k}": v for k, v in TINY_AUGMENTATION.items()})
    fixed.update({"dataset.num_classes": 3, "dataset.batch_size": 4, "dataset.workers": 0,
                  "train.num_epochs": 6, "train.checkpoint_interval": 1})
    cfg = build_run_config({
        "study": {"name": study},
        "sampler": {"name": "random", "seed": 0},
        # an unreachable bar: every trial is pruned once its 2 warm-up epochs are reported
        "pruner": {"name": "threshold", "lower": 0.99, "warmup_epochs": 2},
        "launcher": {"name": "docker", "grace_period": 5, "poll_interval": 0.2,
                     "options": {"shm_size": "256m"}},
        "data": {"train": str(os.path.dirname(shapes.train.image_dir)),
                 "val": str(os.path.dirname(shapes.val.image_dir))},
        "fixed": fixed,
        "budget": {"n_trials": 2},
        "devices": "cpu",
        "workspace": str(workspace),
    }, use_cpu_variant=False, where="test")
    run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))

    trials = optuna.load_study(study_name=study, storage=cfg.storage_url).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED], \
        [t.user_attrs.get("failure") for t in trials]
    for t in trials:
        assert t.user_attrs["prune_epoch"] == 1
        assert len(t.user_attrs["job_id"]) >= 12  # a container id, not a pid
        log = (workspace / study / f"trial_{t.number:04d}" / "stdout.log").read_text()
        assert "Epoch 5/5" not in log  # stopped long before its 6 epochs
    assert len(stops) == 2 and max(stops) < 10, stops
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=automl.study={study}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []
