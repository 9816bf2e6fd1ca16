"""``dino warm`` (dino.warm): a trainer started ahead trains exactly what a cold one does.

The local launcher hands a real ``dino train`` job to a warm trainer; its metrics, loss
and checkpoint must equal a cold run's of the same spec, and its start-up is timed from
the hand-off. (The launcher's side of the protocol: tests/launchers/test_warm.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from automl.launchers.base import JobSpec
from automl.launchers.local import LocalLauncher
from automl.launchers.warm import WarmTrainer
from dino.checkpoint import load_checkpoint

from dino_test_utils import read_status, run_dino, tiny_spec, write_spec

PROGRAM = (sys.executable, "-m", "dino")


def _job(tmp_path: Path, data, name: str) -> JobSpec:
    results = tmp_path / name
    results.mkdir()
    spec = write_spec(results / "spec.yaml", tiny_spec(data, results, train={"num_epochs": 2}))
    argv = ("train", "-e", str(spec))
    return JobSpec(study_name="warm", trial_number=int(name[-1]), command=(*PROGRAM, *argv), results_dir=results,
                   log_path=results / "stdout.log", env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                   workdir=results, warm=WarmTrainer(PROGRAM, spec, argv))


def _outcome(results: Path) -> tuple:
    lines = read_status(results)
    epochs = [(line["epoch"], line["kpi"]) for line in lines if "epoch" in line]
    ckpt = load_checkpoint(str(results / "train" / "dino_model_latest.pth"))
    return epochs, ckpt["model"]


def _ready(launcher: LocalLauncher, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = launcher.warm.ready_pids()
        if ready:
            return ready[0]
        if launcher.warm.failures():
            pytest.fail(f"the warm trainer exited: {launcher.warm.failures()}")
        time.sleep(0.1)
    pytest.fail("no warm trainer got ready")


def test_a_job_handed_to_a_warm_trainer_trains_what_a_cold_run_trains(tmp_path, shapes_small):
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=1)
    try:
        cold = launcher.launch(_job(tmp_path, shapes_small, "trial_0"))
        assert cold.wait(240).exit_code == 0, (tmp_path / "trial_0" / "stdout.log").read_text()
        spare = _ready(launcher)
        warm = launcher.launch(_job(tmp_path, shapes_small, "trial_1"))
        assert warm.id == str(spare)
        assert warm.wait(240).exit_code == 0, (tmp_path / "trial_1" / "stdout.log").read_text()
    finally:
        launcher.close()
    log = (tmp_path / "trial_1" / "stdout.log").read_text()
    assert f"[automl] warm trainer (pid {spare}) before the launch: dino-warm: one fp32 training step of " \
           "resnet_tiny at 64 px on cpu" in log
    assert "Epoch 1/1 done" in log

    cold_epochs, cold_weights = _outcome(tmp_path / "trial_0")
    warm_epochs, warm_weights = _outcome(tmp_path / "trial_1")
    assert [e for e, _ in warm_epochs] == [0, 1]
    assert warm_epochs == cold_epochs  # the same losses and validation metrics, to the last digit
    assert cold_weights.keys() == warm_weights.keys()
    for name, tensor in cold_weights.items():
        assert torch.equal(tensor, warm_weights[name]), name

    def startup(results: Path) -> dict:
        return next(line for line in read_status(results) if "startup" in line)

    cold_start, warm_start = startup(tmp_path / "trial_0"), startup(tmp_path / "trial_1")
    assert "imports and spec" in cold_start["startup"] and "warm_trainer" not in cold_start
    assert "spec" in warm_start["startup"] and "imports and spec" not in warm_start["startup"]
    assert warm_start["warm_trainer"]["warm_s"] > 0
    assert "warm trainer: imports and warm-up took" in warm_start["message"]
    record = json.loads((tmp_path / "trial_1" / "job.json").read_text())
    assert record["warm"] is True and record["exit_code"] == 0


def test_a_warm_trainer_refuses_other_tasks_in_the_jobs_log(tmp_path, shapes_small):
    """Only ``train`` is taken over: anything else fails with a line in the job's log."""
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(shapes_small, tmp_path / "r"))
    proc = subprocess.Popen([*PROGRAM, "warm", "--like", str(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.stdout is not None and proc.stdin is not None
    lines = [proc.stdout.readline() for _ in range(2)]
    assert lines[1].strip() == "dino-warm: ready", lines
    log = tmp_path / "job.log"
    proc.stdin.write(json.dumps({"argv": ["export", "-e", str(spec)], "cwd": str(tmp_path), "log_path": str(log),
                                 "launched_at": time.time()}) + "\n")
    proc.stdin.close()
    assert proc.wait(60) == 2
    assert "a warm trainer takes over train jobs, not ['export'" in log.read_text()


def test_dino_warm_fails_before_ready_on_a_bad_spec(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("model: {backbone: resnet_999}\n")
    result = run_dino("warm", "--like", str(bad), input="", timeout=120)
    assert result.returncode == 1
    assert "dino-warm: warm-up failed, not used" in result.stdout and "dino-warm: ready" not in result.stdout
