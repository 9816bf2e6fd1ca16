"""Two trials packed on one slot with the Docker launcher: two containers of the trainer
image at the same time, both writing to the workspace's shared kernel cache through its
mount, as the non-root container user."""

from __future__ import annotations

import os
import re
import subprocess

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from test_docker_trainer import TINY_AUGMENTATION, TINY_MODEL, shapes  # noqa: F401 (fixture)

from automl.config import build_run_config
from automl.study.runner import run_study
from automl.ui.progress import ProgressBoard

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# the trainer, bracketed by the container's clock, after a probe file in the shared cache
WRAPPER = ('echo "JOB START $(date +%s.%N)"; echo "$(id -u)" > "$TRITON_CACHE_DIR/probe-$(cat /etc/hostname)"; '
           'dino "$@"; rc=$?; echo "JOB END $(date +%s.%N)"; exit $rc')


def test_two_containers_share_a_slot_and_the_kernel_cache(docker_client, study, shapes, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.chmod(tmp_path, 0o755)  # the container user reads the results dirs under it
    fixed = {f"model.{k}": v for k, v in TINY_MODEL.items()}
    fixed.update({f"dataset.augmentation.{k}": v for k, v in TINY_AUGMENTATION.items()})
    fixed.update({"dataset.num_classes": 3, "dataset.batch_size": 4, "dataset.workers": 0,
                  "train.num_epochs": 3, "train.checkpoint_interval": 1})
    cfg = build_run_config({
        "study": {"name": study},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "launcher": {"name": "docker", "grace_period": 5, "poll_interval": 0.2,
                     "options": {"image": os.environ.get("AUTOML_TRAINER_IMAGE", "dino-automl/trainer:latest"),
                                 "shm_size": "256m"}},
        "trainer": {"command": ["sh", "-c", WRAPPER, "sh", "train"]},
        "data": {"train": str(os.path.dirname(shapes.train.image_dir)),
                 "val": str(os.path.dirname(shapes.val.image_dir))},
        "fixed": fixed,
        "budget": {"n_trials": 2},
        "devices": {"use": "cpu", "trials_per_slot": 2},
        "workspace": str(workspace),
    }, use_cpu_variant=False, where="test")
    run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))

    trials = optuna.load_study(study_name=study, storage=cfg.storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs.get("failure") for t in trials]
    spans = []
    for t in trials:
        log = (workspace / study / f"trial_{t.number:04d}" / "stdout.log").read_text()
        (start,) = re.findall(r"^JOB START (\S+)$", log, re.MULTILINE)
        (end,) = re.findall(r"^JOB END (\S+)$", log, re.MULTILINE)
        spans.append((float(start), float(end)))
        assert len(t.user_attrs["job_id"]) >= 12  # a container
        assert t.user_attrs["slot"] == "cpu"
    (start0, end0), (start1, end1) = spans
    assert start0 < end1 and start1 < end0, spans  # the two containers ran at the same time
    assert sorted(len(t.user_attrs["ran_beside"]) for t in trials) == [1, 1]

    # both containers wrote into the one cache folder on the host, as the non-root user
    cache = workspace / "cache" / "triton"
    probes = sorted(cache.glob("probe-*"))
    assert len(probes) == 2, probes
    for probe in probes:
        uid = int(probe.read_text())
        assert uid != 0 and probe.stat().st_uid == uid
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=automl.study={study}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []
