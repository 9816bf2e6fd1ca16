"""Any number of Ctrl-C's (and SIGTERM) to a real ``automl run`` leave the running trial
queued for a retry that resumes from its checkpoint; the job is gone, nothing is lost."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator_utils import scripted_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def _start(config: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "automl", "run", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _job_pids(tmp_path: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{tmp_path}/ws/scripted"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("signals", [
    [(signal.SIGINT, 0.0), (signal.SIGINT, 0.3)],  # the reported case: two Ctrl-C's 0.3 s apart
    [(signal.SIGINT, 0.0)] + [(signal.SIGINT, 0.02)] * 5 + [(signal.SIGTERM, 0.05)],  # a hammered keyboard, then kill
], ids=["two-ctrl-c", "many-signals"])
def test_interrupted_trial_is_queued_with_its_checkpoint(tmp_path, coco_dirs, signals):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2}, pruner={"name": "none"},
                          fixed={"train.num_epochs": 8, "dataset.batch_size": 2})
    config = write_config(tmp_path, raw)
    env = {**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"}
    train = tmp_path / "ws" / "scripted" / "trial_0000" / "train"

    first = _start(config, env)
    deadline = time.monotonic() + 90
    while len(list(train.glob("model_epoch_*.pth"))) < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "trial 0 never reached 2 checkpoints"
        time.sleep(0.05)
    for sig, pause in signals:
        time.sleep(pause)
        first.send_signal(sig)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    # (a signal that arrives while the same one is pending merges with it: the count is not checked)
    assert "interrupted by SIGINT (Ctrl-C)" in out and "trial(s) [0] queued to resume" in out
    assert _job_pids(tmp_path) == []  # the trainer was stopped, not left behind
    checkpoints = sorted(p.name for p in train.glob("model_epoch_*.pth"))
    assert len(checkpoints) >= 2

    study = optuna.load_study(study_name="scripted", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    interrupted, retry = study.trials
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["interrupted"] is True and interrupted.user_attrs["failure_code"] == "interrupted"
    assert interrupted.user_attrs["failure"].startswith("interrupted (SIGINT (Ctrl-C)")
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    assert retry.params == interrupted.params
    assert retry.user_attrs["results_dir"] == interrupted.user_attrs["results_dir"]
    assert retry.intermediate_values == interrupted.intermediate_values

    # the same command finishes the study: the retry resumes, the done epochs are not trained again
    second = _start(config, env)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    study = optuna.load_study(study_name="scripted", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert sorted(study.trials[1].intermediate_values) == list(range(8))
    log = (train.parent / "stdout.log").read_text()
    assert "resuming from epoch" in log
    for name in checkpoints:
        epoch = int(name.split("_")[2])
        assert log.count(f"TRAINED EPOCH {epoch}\n") == 1, log


def test_a_stop_requested_by_another_thread_keeps_the_trial_too(tmp_path, coco_dirs, monkeypatch):
    """``run_study(stop_event=...)`` (a scheduler ending a run at its deadline) stops like a Ctrl-C."""
    import threading

    from rich.console import Console

    from automl.config import build_run_config
    from automl.study.runner import run_study
    from automl.ui.progress import ProgressBoard

    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.3")
    cfg = build_run_config(scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2}, pruner={"name": "none"},
                                           fixed={"train.num_epochs": 8, "dataset.batch_size": 2}),
                           use_cpu_variant=False, where="test")
    stop = threading.Event()
    train = tmp_path / "ws" / "scripted" / "trial_0000" / "train"

    def stop_after_two_checkpoints() -> None:
        while len(list(train.glob("model_epoch_*.pth"))) < 2:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=stop_after_two_checkpoints, daemon=True).start()
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))), stop_event=stop)
    assert outcome.interrupted and outcome.exit_code == 130
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    first, retry = study.trials
    assert first.user_attrs["failure"].startswith("interrupted (stop requested)")
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
