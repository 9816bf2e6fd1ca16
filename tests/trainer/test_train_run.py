"""Whole runs of ``python -m dino train`` on CPU: outputs, kill and resume, SIGTERM, evaluate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dino_test_utils import dino_env, read_status, run_dino, tiny_spec, write_spec

EPOCHS = 3
STEPS = 18  # shapes_learnable: 72 training images / batch 4
STOPPED = "Train stopped by SIGTERM; rerun the same command to resume from the latest checkpoint"


def popen_train(spec_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dino", "train", "-e", str(spec_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dino_env(), start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"trainer exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the trainer")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def killed_and_resumed(shapes_learnable, tmp_path_factory):
    """A 3-epoch run SIGKILLed right after its first checkpoint, then restarted to the end;
    and the same spec run without interruption, for comparison. On data the tiny model
    learns (val_mAP50 above zero), so equal scores mean something."""
    root = tmp_path_factory.mktemp("resume")
    spec_path = write_spec(root / "spec.yaml", tiny_spec(shapes_learnable, root / "results", train={"num_epochs": EPOCHS}))
    train_dir = root / "results" / "train"
    proc = popen_train(spec_path)
    wait_for(lambda: (train_dir / f"model_epoch_000_step_{STEPS}.pth").exists(), proc)
    proc.kill()
    proc.wait()
    before = read_status(root / "results")
    resumed = run_dino("train", "-e", str(spec_path))
    clean_dir = root / "clean"
    clean = run_dino("train", "-e", str(spec_path), f"results_dir={clean_dir}")
    return {"root": root, "spec": spec_path, "before": before, "after": read_status(root / "results")[len(before):],
            "resumed": resumed, "clean": clean, "clean_status": read_status(clean_dir), "train_dir": train_dir}


def test_restart_continues_from_the_checkpoint(killed_and_resumed):
    run = killed_and_resumed
    assert run["resumed"].returncode == 0, run["resumed"].stdout + run["resumed"].stderr
    done_before = [line["epoch"] for line in run["before"] if "epoch" in line]
    assert done_before and done_before[0] == 0 and max(done_before) < EPOCHS - 1
    assert run["before"][-1]["status"] == "RUNNING"  # SIGKILL: no last word
    epochs_after = [line["epoch"] for line in run["after"] if "epoch" in line]
    assert epochs_after == list(range(max(done_before) + 1, EPOCHS))  # nothing trained twice
    assert any(line["message"].startswith("Resuming training from") for line in run["after"])
    assert f"Resuming from {run['train_dir']}" in run["resumed"].stdout
    # the resumed run ends exactly where an uninterrupted one does (RNG, optimizer, schedule restored)
    final = [line for line in run["after"] if "epoch" in line][-1]["kpi"]
    clean = [line for line in run["clean_status"] if "epoch" in line][-1]["kpi"]
    assert float(clean["val_mAP50"]) > 0.0  # else equal scores would prove nothing
    assert final["train_loss"] == pytest.approx(clean["train_loss"], rel=1e-5)
    assert final["val_mAP50"] == clean["val_mAP50"] and final["val_mAP"] == clean["val_mAP"]


def test_status_stdout_and_checkpoints_follow_the_tao_contract(killed_and_resumed):
    run = killed_and_resumed
    lines, stdout = run["clean_status"], run["clean"].stdout
    assert run["clean"].returncode == 0
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "SUCCESS"
    assert all(set(line) >= {"date", "time", "status", "verbosity", "message"} for line in lines)
    epoch_lines = [line for line in lines if "epoch" in line]
    assert [line["epoch"] for line in epoch_lines] == list(range(EPOCHS))
    for k, line in enumerate(epoch_lines):
        assert line["max_epoch"] == EPOCHS - 1 and line["step"] == STEPS * (k + 1) and line["max_step"] == STEPS * EPOCHS
        assert re.fullmatch(r"\d+:\d\d:\d\d(\.\d+)?", line["time_per_epoch"]) and "eta" in line
        kpi = line["kpi"]
        assert isinstance(kpi["val_mAP"], str) and isinstance(kpi["val_mAP50"], str)
        assert 0.0 <= float(kpi["val_mAP"]) <= float(kpi["val_mAP50"]) <= 1.0
        assert isinstance(kpi["val_loss"], float) and isinstance(kpi["train_loss"], float)
    evals = [line for line in lines if line["message"] == "Eval metrics generated."]
    assert len(evals) == EPOCHS
    printed = re.findall(r"^Validation mAP50 : (\S+)$", stdout, re.M)
    assert printed == [line["kpi"]["val_mAP50"] for line in epoch_lines]
    assert len(re.findall(r"^Validation mAP : \S+$", stdout, re.M)) == EPOCHS
    assert len(re.findall(r"^Epoch \d+/2 done: train_loss \d+\.\d+", stdout, re.M)) == EPOCHS
    names = sorted(os.listdir(run["root"] / "clean" / "train"))
    assert names == ["dino_model_latest.pth", "model_best.json", "model_best.pth",
                     *(f"model_epoch_{e:03d}_step_{STEPS * (e + 1)}.pth" for e in range(EPOCHS)), "status.json"]


def test_evaluate_the_latest_checkpoint(killed_and_resumed):
    run = killed_and_resumed
    proc = run_dino("evaluate", "-e", str(run["spec"]))
    assert proc.returncode == 0, proc.stderr
    value = re.search(r"^Test mAP50 : (\S+)$", proc.stdout, re.M).group(1)
    status = read_status(run["root"] / "results", "evaluate")
    assert status[-1]["status"] == "SUCCESS" and status[-1]["kpi"]["test_mAP50"] == value
    metrics = json.loads((run["root"] / "results" / "evaluate" / "metrics.json").read_text())
    assert metrics["checkpoint"].endswith("dino_model_latest.pth") and metrics["num_images"] == 24
    # same weights, same images: the number validation reported for the last epoch
    final_val = [line for line in read_status(run["root"] / "results") if "epoch" in line][-1]["kpi"]["val_mAP50"]
    assert float(value) > 0.0  # a score to compare, not 0.0 == 0.0
    assert float(value) == pytest.approx(float(final_val), abs=1e-9)


def _epoch_lines(results: Path) -> int:
    path = results / "train" / "status.json"
    return path.read_text().count('"epoch":') if path.exists() else 0


@pytest.mark.parametrize("when", ["mid-epoch", "at the epoch boundary"])
def test_sigterm_to_the_process_group_stops_quietly_with_one_line(shapes_small, tmp_path, when):
    """As a launcher stops a job: SIGTERM to the trainer and its 2 loader workers, in the
    middle of an epoch, or just as epoch 0 is reported (when a pruner decides: the
    trainer is writing the checkpoint and starting the next epoch's workers). The log
    ends with one line saying it stopped, no worker tracebacks; exit 143."""
    spec = tiny_spec(shapes_small, tmp_path / "results", train={"num_epochs": 50})
    spec["dataset"]["workers"] = 2
    proc = popen_train(write_spec(tmp_path / "spec.yaml", spec))
    if when == "mid-epoch":
        wait_for(lambda: (tmp_path / "results" / "train" / "model_epoch_000_step_6.pth").exists(), proc)
        time.sleep(0.3)
    else:
        wait_for(lambda: _epoch_lines(tmp_path / "results") >= 1, proc)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert time.time() - sent < 10  # inside the local launcher's grace period
    assert "Traceback" not in out and "Exception ignored" not in out and "Error" not in out, out
    assert out.rstrip().splitlines()[-1] == STOPPED, out
    lines = read_status(tmp_path / "results")
    assert lines[-1]["status"] == "FAILURE" and "SIGTERM" in lines[-1]["message"] and "resume" in lines[-1]["message"]
    assert not [n for n in os.listdir(tmp_path / "results" / "train") if ".tmp" in n]
    # every epoch the log reports has its checkpoint: a rerun trains none of them again
    import torch

    latest = torch.load(tmp_path / "results" / "train" / "dino_model_latest.pth", map_location="cpu", weights_only=False)
    assert latest["epoch"] == max(line["epoch"] for line in lines if "epoch" in line)
