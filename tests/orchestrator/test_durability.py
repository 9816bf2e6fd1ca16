"""Nothing lost when the orchestrator dies: kill -9 mid-trial, run the same command
again, and the study completes with the interrupted trial resumed from its checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from automl.config import build_run_config
from automl.study.recovery import recover_study
from automl.study.runner import open_study

from orchestrator_utils import scripted_config

ROOT = Path(__file__).resolve().parents[2]


def _automl(config: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "automl", "run", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_trial_then_restart_resumes_from_checkpoint(tmp_path, coco_dirs):
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2}, fixed={"train.num_epochs": 6, "dataset.batch_size": 2},
                          pruner={"name": "none"})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.8", "PYTHONUNBUFFERED": "1"}
    trial_dir = tmp_path / "ws" / "scripted" / "trial_0000"

    first = _automl(config, env)
    deadline = time.monotonic() + 90
    while len(list((trial_dir / "train").glob("model_epoch_*.pth"))) < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "trial 0 never reached 2 checkpoints"
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before_kill = sorted(int(p.stem.split("_")[2]) for p in (trial_dir / "train").glob("model_epoch_*.pth"))

    second = _automl(config, env)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    assert "recovered trials of dead workers: [0]" in out

    study = optuna.load_study(study_name="scripted", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    trials = study.get_trials()
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    # the killed trial is failed, its retry completed in the same results dir, plus the second trial
    assert [t.number for t in by_state[TrialState.FAIL]] == [0]
    assert len(by_state[TrialState.COMPLETE]) == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == trials[0].params
    assert retry.user_attrs["results_dir"] == str(trial_dir)
    assert sorted(retry.intermediate_values) == list(range(6))
    assert len({t.number for t in trials}) == len(trials) == 3

    log = (trial_dir / "stdout.log").read_text()
    assert "resuming from epoch" in log
    for epoch in done_before_kill:  # checkpointed epochs were not trained again
        assert log.count(f"TRAINED EPOCH {epoch}\n") == 1, log
    # no job of the study is left running
    assert not any(p.poll() is None for p in (first, second))
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_stale_heartbeat_trial_is_failed_and_requeued(tmp_path, coco_dirs):
    """A worker on another host stops heart-beating: after the grace period its
    trial is failed and queued again with the same parameters."""
    cfg = build_run_config(scripted_config(tmp_path, coco_dirs, study={"heartbeat_interval": 1, "grace_period": 2}),
                           use_cpu_variant=False, where="test")
    study = open_study(cfg)
    trial = study.ask({"train.optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    trial.set_user_attr("worker", "another-host:1234")
    trial.set_user_attr("results_dir", str(tmp_path / "r"))
    trial.report(0.1, 0)
    study._storage.record_heartbeat(trial._trial_id)
    assert recover_study(study, max_retry=3) == []  # still fresh
    time.sleep(3.5)  # SQLite timestamps have one-second resolution
    assert recover_study(study, max_retry=3) == [0]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING
    assert trials[1].params == trials[0].params
    assert trials[1].user_attrs["results_dir"] == str(tmp_path / "r")
    assert trials[1].intermediate_values == {0: 0.1}
    assert recover_study(study, max_retry=3) == []  # queued once only
    assert len(study.get_trials()) == 2


def test_a_local_worker_is_known_by_pid_and_start_time():
    """Not by its command line: a recycled pid (same number, later start) is a dead worker,
    whatever runs under it now."""
    import socket

    from automl.launchers import _procfs
    from automl.study.recovery import dead_local_worker

    def trial(worker: str):
        return optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs={"worker": worker})

    host = socket.gethostname()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = _procfs.start_ticks(proc.pid)
        assert not dead_local_worker(trial(f"{host}:{proc.pid}:{ticks}"))
        assert dead_local_worker(trial(f"{host}:{proc.pid}:{ticks + 1}"))  # the pid was handed on
        assert not dead_local_worker(trial(f"{host}:{proc.pid}"))  # an id without start time: by pid
        assert not dead_local_worker(trial(f"another-host:{proc.pid}:{ticks + 1}"))  # heartbeats judge it
    finally:
        proc.kill()
        proc.wait()
    assert dead_local_worker(trial(f"{host}:{proc.pid}:{ticks}"))
