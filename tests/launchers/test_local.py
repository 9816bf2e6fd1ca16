"""LocalLauncher with real subprocesses: logs, device pinning, stopping, orphans."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from launcher_test_utils import wait_for

from automl.launchers import _procfs, get_launcher
from automl.launchers.base import JobHandle, JobSpec, Launcher
from automl.launchers.local import LocalLauncher

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
PY = sys.executable


def spec(tmp_path: Path, code: str, trial: int = 0, study: str = "s", **kw) -> JobSpec:
    results = tmp_path / f"trial_{trial}"
    return JobSpec(
        study_name=study,
        trial_number=trial,
        command=(PY, "-c", textwrap.dedent(code)),
        results_dir=results,
        log_path=results / "log.txt",
        **kw,
    )



def output(log: Path) -> str:
    """The job's own output: the log minus the launcher's header lines (which echo the
    command, code included)."""
    if not log.exists():
        return ""
    return "".join(line for line in log.read_text().splitlines(True) if not line.startswith("[automl]"))


def wait_result(handle, timeout=20.0):
    assert wait_for(lambda: handle.poll() is not None, timeout), "job did not end"
    return handle.poll()


@pytest.fixture
def launcher(tmp_path):
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", reap_grace_period=1.0)
    yield launcher
    for handle in list(launcher._live.values()):  # a failed test leaves nothing running
        handle.stop(grace_period=0.5)


def test_protocol_and_registry_by_name(tmp_path):
    launcher = get_launcher("local", registry_dir=tmp_path)
    assert isinstance(launcher, Launcher) and launcher.name == "local"


def test_runs_job_pins_devices_and_appends_the_log(tmp_path, launcher):
    code = """
        import os, sys
        print("cvd=[%s]" % os.environ["CUDA_VISIBLE_DEVICES"], os.environ["EXTRA"])
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """
    job = spec(tmp_path, code, devices=(1, 3), env={"EXTRA": "x1", "CUDA_VISIBLE_DEVICES": "9"})
    handle = launcher.launch(job)
    assert isinstance(handle, JobHandle) and handle.id.isdigit()
    result = wait_result(handle)
    assert result.exit_code == 3 and not result.stopped and not result.oom_killed
    log = job.log_path.read_text()
    assert "cvd=[1,3] x1" in log and "to stderr" in log

    cpu_job = spec(tmp_path, code, env={"EXTRA": "x2"})  # same trial: a resumed run
    assert wait_result(launcher.launch(cpu_job)).exit_code == 3
    log = job.log_path.read_text()
    assert "cvd=[1,3] x1" in log and "cvd=[] x2" in log  # appended, CPU job sees no GPU
    assert log.count("[automl]") == 2


def test_job_has_its_own_process_group_and_records(tmp_path, launcher):
    handle = launcher.launch(spec(tmp_path, "import os; print(os.getpgid(0), os.getsid(0))"))
    result = wait_result(handle)
    assert result.exit_code == 0
    pgid, sid = map(int, output(tmp_path / "trial_0" / "log.txt").split())
    assert pgid == sid == int(handle.id) != os.getpgid(0)
    record = json.loads((tmp_path / "trial_0" / "job.json").read_text())
    assert record["pid"] == int(handle.id) and record["trial"] == 0 and record["study"] == "s"
    assert record["exit_code"] == 0 and record["start_ticks"] > 0
    assert list((tmp_path / "registry").rglob("*.json")) == []  # ended under watch


def test_poll_never_blocks(tmp_path, launcher):
    handle = launcher.launch(spec(tmp_path, "import time; time.sleep(30)"))
    start = time.monotonic()
    assert handle.poll() is None
    assert time.monotonic() - start < 0.5
    assert len(list((tmp_path / "registry").rglob("*.json"))) == 1
    assert handle.stop(grace_period=5).stopped


def test_stop_lets_a_job_finish_on_sigterm(tmp_path, launcher):
    code = """
        import signal, sys, time
        def bye(*_):
            print("got SIGTERM, saving", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
    """
    job = spec(tmp_path, code)
    handle = launcher.launch(job)
    assert wait_for(lambda: "ready" in output(job.log_path))
    start = time.monotonic()
    result = handle.stop(grace_period=10)
    assert time.monotonic() - start < 5
    assert result.stopped and result.exit_code == 0
    assert "got SIGTERM, saving" in output(job.log_path)
    assert handle.poll() == result


def test_stop_kills_a_job_ignoring_sigterm_and_its_children(tmp_path, launcher):
    code = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print("child", child.pid, flush=True)
        time.sleep(60)
    """
    job = spec(tmp_path, code)
    handle = launcher.launch(job)
    assert wait_for(lambda: "child" in output(job.log_path))
    child = int(output(job.log_path).split("child ")[1].split()[0])
    start = time.monotonic()
    result = handle.stop(grace_period=0.5)
    took = time.monotonic() - start
    assert 0.5 <= took < 5
    assert result.stopped and result.exit_code == 128 + signal.SIGKILL
    assert wait_for(lambda: not _procfs.is_running(child), 5)


def test_stop_does_not_wait_the_grace_period_for_helpers_of_an_exited_leader(tmp_path, launcher):
    """Data-loader workers that inherited the trainer's SIGTERM handler outlive it; once the
    trainer has exited, its helpers get LEFTOVER_GRACE, not the whole grace period."""
    from automl.launchers.local import LEFTOVER_GRACE

    code = """
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
            "time.sleep(60)"])
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
        print("child", child.pid, flush=True)
        time.sleep(60)
    """
    job = spec(tmp_path, code)
    handle = launcher.launch(job)
    assert wait_for(lambda: "child" in output(job.log_path) and "up" in output(job.log_path))
    child = int(output(job.log_path).split("child ")[1].split()[0])
    start = time.monotonic()
    result = handle.stop(grace_period=20)
    took = time.monotonic() - start
    assert took < LEFTOVER_GRACE + 3, took
    assert result.stopped and result.exit_code == 143  # the leader's own exit, not our SIGKILL
    assert wait_for(lambda: not _procfs.is_running(child), 5)


def test_children_left_by_a_finished_leader_are_ended(tmp_path, launcher):
    code = """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("child", child.pid, flush=True)
    """
    job = spec(tmp_path, code)
    result = wait_result(launcher.launch(job))
    assert result.exit_code == 0 and not result.stopped
    child = int(output(job.log_path).split("child ")[1].split()[0])
    assert wait_for(lambda: not _procfs.is_running(child), 5)


def test_killed_from_outside_reports_the_signal(tmp_path, launcher):
    job = spec(tmp_path, "import time; print('up', flush=True); time.sleep(60)")
    handle = launcher.launch(job)
    assert wait_for(lambda: "up" in output(job.log_path))
    os.kill(int(handle.id), signal.SIGKILL)
    result = wait_result(handle)
    assert result.exit_code == 137 and not result.stopped and not result.oom_killed


def test_missing_command_fails_like_a_shell(tmp_path, launcher):
    job = JobSpec("s", 5, ("no-such-trainer-xyz", "train"), tmp_path / "t5", tmp_path / "t5" / "log.txt")
    handle = launcher.launch(job)
    result = handle.poll()
    assert result is not None and result.exit_code == 127
    assert "[automl] cannot start 'no-such-trainer-xyz'" in job.log_path.read_text()


ORCHESTRATOR = """
import sys, os
from pathlib import Path
from automl.launchers.base import JobSpec
from automl.launchers.local import LocalLauncher

registry, root, study = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
launcher = LocalLauncher(registry_dir=registry)
# trial 0 behaves, trial 1 ignores SIGTERM, trial 2's leader exits leaving its worker
for trial in (0, 1, 2):
    code = ("import signal, subprocess, sys, time;"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN) if %d == 1 else None;"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
            "print('worker', c.pid, flush=True); time.sleep(1 if %d == 2 else 120)") % (trial, trial)
    d = root / f"trial_{trial}"
    h = launcher.launch(JobSpec(study, trial, (sys.executable, "-c", code), d, d / "log.txt"))
    print(h.id, flush=True)
os._exit(0)  # dies without stopping its jobs
"""


def test_reap_orphans_of_a_dead_orchestrator(tmp_path):
    registry = tmp_path / "registry"
    out = subprocess.run(
        [PY, "-c", ORCHESTRATOR, str(registry), str(tmp_path), "study-a"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    pids = [int(p) for p in out.stdout.split()]
    logs = [tmp_path / f"trial_{t}" / "log.txt" for t in (0, 1, 2)]
    launcher = LocalLauncher(registry_dir=registry, reap_grace_period=0.5)
    try:
        assert wait_for(lambda: all("worker" in output(log) for log in logs))
        workers = [int(output(log).split("worker ")[1].split()[0]) for log in logs]
        assert all(_procfs.is_running(p) for p in workers)
        assert wait_for(lambda: not _procfs.is_running(pids[2]), 10)  # trial 2's leader is gone

        assert launcher.reap_orphans("other-study", set()) == []
        stopped = launcher.reap_orphans("study-a", keep_trial_numbers={0})
        assert [s.split(",")[0] for s in stopped] == [f"trial 1 (pid {pids[1]}", f"trial 2 (pid {pids[2]}"]
        # trial 1 ignored SIGTERM: killed, worker included; trial 2's leftover worker too
        assert wait_for(lambda: not any(_procfs.is_running(p) for p in (pids[1], *workers[1:])), 5)
        assert _procfs.is_running(pids[0]) and _procfs.is_running(workers[0])  # kept
        assert launcher.reap_orphans("study-a", keep_trial_numbers={0}) == []  # records gone
    finally:
        stopped = launcher.reap_orphans("study-a", set())
    assert len(stopped) == 1 and stopped[0].startswith("trial 0")
    assert wait_for(lambda: not any(_procfs.is_running(p) for p in pids + workers), 5)
    assert list(registry.rglob("*.json")) == []


def test_reap_never_kills_a_recycled_pid(tmp_path, launcher):
    """A record whose pid now belongs to another process (other start time) is dropped."""
    bystander = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        job = spec(tmp_path, "pass", trial=7, study="study-b")
        handle = launcher.launch(job)
        wait_result(handle)
        record = json.loads(job.results_dir.joinpath("job.json").read_text())
        record.update(pid=bystander.pid, pgid=bystander.pid, start_ticks=_procfs.start_ticks(bystander.pid) + 1000)
        folder = next((tmp_path / "registry").glob("study-b-*"))
        (folder / "trial_7_1.json").write_text(json.dumps(record))
        assert launcher.reap_orphans("study-b", set()) == []
        assert bystander.poll() is None  # untouched
        assert not (folder / "trial_7_1.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_reap_skips_jobs_this_launcher_is_watching(tmp_path, launcher):
    handle = launcher.launch(spec(tmp_path, "import time; time.sleep(30)", study="study-c"))
    assert launcher.reap_orphans("study-c", set()) == []
    assert handle.poll() is None
    handle.stop(grace_period=2)


def test_monitor_sees_epochs_of_a_running_job_and_stop_ends_it(tmp_path, launcher):
    """The objective's loop in miniature: a job writing status.json as it trains is
    watched while it runs and stopped after its second epoch (a pruning decision)."""
    from automl.observe.monitor import TrialMonitor
    from metric_extractors import TaoStatusExtractor

    code = """
        import json, os, sys, time
        path = os.path.join(sys.argv[1], "train", "status.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for epoch in range(100):
            time.sleep(0.1)
            with open(path, "a") as f:
                f.write(json.dumps({"status": "RUNNING", "epoch": epoch,
                                    "kpi": {"val_mAP50": str(epoch / 100)}}) + "\\n")
            print("Validation mAP50 :", epoch / 100, flush=True)
    """
    job = spec(tmp_path, code)
    job = dataclasses.replace(job, command=job.command + (str(job.results_dir),))
    handle = launcher.launch(job)
    monitor = TrialMonitor(job.results_dir, job.log_path, TaoStatusExtractor())
    epochs: list[int] = []
    deadline = time.monotonic() + 20
    while len(epochs) < 2 and time.monotonic() < deadline and handle.poll() is None:
        epochs += [m.epoch for m in monitor.poll()]
        time.sleep(0.05)
    assert epochs[:2] == [0, 1]
    result = handle.stop(grace_period=2)
    assert result.stopped and result.exit_code == 128 + signal.SIGTERM
    written = len(monitor.status_lines())
    time.sleep(0.3)
    assert len(monitor.status_lines()) == written < 100  # nothing more is written


def test_wait_returns_the_result_or_times_out_and_leaves_the_job_running(tmp_path, launcher):
    handle = launcher.launch(spec(tmp_path, "import time; time.sleep(30)"))
    with pytest.raises(TimeoutError, match=r"job \d+ of trial 0 still running after 0.3 s"):
        handle.wait(timeout=0.3)
    assert handle.result is None and handle.poll() is None
    assert handle.stop(grace_period=1).stopped
    quick = launcher.launch(spec(tmp_path, "import sys; sys.exit(4)", trial=1))
    assert quick.wait(timeout=30).exit_code == 4
    assert quick.result is not None and quick.result.exit_code == 4


def test_job_records_name_the_worker_by_pid_and_start_time(tmp_path, launcher):
    from automl.launchers.records import WorkerId, current_worker

    handle = launcher.launch(spec(tmp_path, "pass"))
    handle.wait(timeout=30)
    record = json.loads((tmp_path / "trial_0" / "job.json").read_text())
    worker = WorkerId.parse(record["worker"])
    assert worker == current_worker() and worker.start_ticks == _procfs.start_ticks(os.getpid())
    assert worker.is_alive()


def test_launcher_options_are_checked_like_the_run_configs():
    from automl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"launcher\.options\.registry: launcher 'local' has no option 'registry'; it accepts registry_dir"):
        get_launcher("local", registry="/tmp/x")
    with pytest.raises(ConfigError, match=r"reap_grace_period: Input should be a valid number"):
        get_launcher("local", reap_grace_period="soon")
