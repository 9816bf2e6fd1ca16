"""Warm trainers of the local launcher (automl.launchers.warm) with real processes.

A stand-in trainer speaks the ``dino warm`` protocol (ready line, one JSON line on stdin,
then it becomes the job), so these tests see the launcher's side in a second each; the
real ``dino warm`` is tested in tests/trainer/test_warm_trainer.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from launcher_test_utils import wait_for as _wait_for

from automl.config.run_config import TrainerSettings
from automl.errors import ConfigError
from automl.launchers import get_launcher
from automl.launchers.base import JobSpec
from automl.launchers.local import LocalLauncher
from automl.launchers.warm import MAX_FAILURES, WarmTrainer

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
PY = sys.executable

# ``trainer.py warm --like SPEC`` waits FAKE_WARM_DELAY s, fails when FAKE_WARM_FAIL is set,
# else says ready, reads the job and becomes it: prints its argv, pid and cwd into the
# log and exits with the code its last argument names (it sleeps first if asked).
FAKE_TRAINER = textwrap.dedent(r'''
    import json, os, signal, sys, time

    def run(argv, launched):
        signal.signal(signal.SIGTERM, lambda *_: (print("stopping", flush=True), sys.exit(143)))
        print(f"job argv={argv} pid={os.getpid()} cwd={os.getcwd()} "
              f"devices={os.environ.get('CUDA_VISIBLE_DEVICES')!r} launched={launched}", flush=True)
        time.sleep(float(os.environ.get("FAKE_JOB_SECONDS", "0")))
        sys.exit(int(argv[-1]))

    if sys.argv[1] == "train":  # started cold
        run(sys.argv[1:], "cold")
    assert sys.argv[1:3] == ["warm", "--like"], sys.argv
    time.sleep(float(os.environ.get("FAKE_WARM_DELAY", "0")))
    if os.environ.get("FAKE_WARM_FAIL"):
        print("dino-warm: warm-up failed, not used (RuntimeError: no device)", flush=True)
        sys.exit(1)
    print("dino-warm: warmed up like " + sys.argv[3], flush=True)
    print("dino-warm: ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(0)
    job = json.loads(line)
    log = os.open(job["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log, 1); os.dup2(log, 2)
    os.chdir(job["cwd"])
    run(job["argv"], "warm")
''')


@pytest.fixture
def trainer(tmp_path) -> Path:
    path = tmp_path / "trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def job(tmp_path: Path, trainer: Path, trial: int, code: int = 0, devices: tuple[int, ...] = (), env=None,
        spares: int = 1) -> JobSpec:
    results = tmp_path / f"trial_{trial}"
    results.mkdir(parents=True, exist_ok=True)
    spec = results / "spec.yaml"
    spec.write_text("{}\n")
    argv = ("train", "-e", str(spec), str(code))
    return JobSpec(study_name="s", trial_number=trial, command=(PY, str(trainer), *argv), results_dir=results,
                   log_path=results / "log.txt", devices=devices, env=dict(env or {}), workdir=results,
                   warm=WarmTrainer((PY, str(trainer)), spec, argv, spares=spares))



def wait_for(predicate, timeout=20.0) -> bool:
    return _wait_for(predicate, timeout)


def ready_spares(launcher: LocalLauncher, n: int) -> list[int]:
    """Wait until ``n`` spares said they are ready; their pids."""
    assert wait_for(lambda: len(launcher.warm.ready_pids()) >= n), "spares did not get ready"
    return launcher.warm.pids()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone for our purposes
        return fh.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def launcher(tmp_path):
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=1)
    yield launcher
    launcher.close()


def test_the_next_job_is_handed_to_the_ready_spare_and_is_that_process(tmp_path, trainer, launcher):
    first = launcher.launch(job(tmp_path, trainer, 0))
    assert first.wait(20).exit_code == 0
    assert json.loads((tmp_path / "trial_0" / "job.json").read_text())["warm"] is False  # nothing was ready
    [spare] = ready_spares(launcher, 1)

    second = launcher.launch(job(tmp_path, trainer, 1, code=3))
    assert second.id == str(spare)
    assert second.wait(20).exit_code == 3  # the job's own exit code
    log = (tmp_path / "trial_1" / "log.txt").read_text()
    assert f"[automl] warm trainer (pid {spare}) before the launch: dino-warm: warmed up like" in log
    assert f"job argv=['train', '-e', '{tmp_path / 'trial_1' / 'spec.yaml'}', '3'] pid={spare} " \
           f"cwd={tmp_path / 'trial_1'} devices='' launched=warm" in log
    assert "dino-warm: ready" not in log
    record = json.loads((tmp_path / "trial_1" / "job.json").read_text())
    assert record["warm"] is True and record["pid"] == spare and record["exit_code"] == 3
    # a new spare was started for the job after it
    assert wait_for(lambda: len(launcher.warm.pids()) == 1 and launcher.warm.pids() != [spare])


def test_a_job_with_another_environment_starts_cold(tmp_path, trainer, launcher):
    launcher.launch(job(tmp_path, trainer, 0, devices=(0,))).wait(20)
    [spare] = ready_spares(launcher, 1)
    other = launcher.launch(job(tmp_path, trainer, 1, devices=(1,)))  # other devices: other CUDA_VISIBLE_DEVICES
    assert other.id != str(spare)
    assert other.wait(20).exit_code == 0
    assert "devices='1'" in (tmp_path / "trial_1" / "log.txt").read_text()
    assert json.loads((tmp_path / "trial_1" / "job.json").read_text())["warm"] is False
    assert spare in launcher.warm.pids()  # still waiting for a job like its own
    threads = launcher.launch(job(tmp_path, trainer, 2, devices=(0,), env={"OMP_NUM_THREADS": "3"}))
    assert threads.id != str(spare)  # one variable differs: not the same process a cold start gives
    threads.wait(20)
    same = launcher.launch(job(tmp_path, trainer, 3, devices=(0,)))
    assert same.id == str(spare)
    assert same.wait(20).exit_code == 0


def test_a_spare_still_warming_up_is_waited_for_and_the_wait_counts_in_the_start_up(tmp_path, trainer,
                                                                                     launcher, monkeypatch):
    """The spare started before the job, so it is ready before a cold start would be: the
    job waits for it, and the trainer's start-up is timed from the launch, not the hand-off."""
    monkeypatch.setenv("FAKE_WARM_DELAY", "3")
    launcher.launch(job(tmp_path, trainer, 0)).wait(20)
    [spare] = launcher.warm.pids()
    began = time.time()
    handle = launcher.launch(job(tmp_path, trainer, 1))
    assert handle.id == str(spare) and time.time() - began >= 0.5
    assert handle.wait(20).exit_code == 0
    log = (tmp_path / "trial_1" / "log.txt").read_text()
    assert "launched=warm" in log and "[automl] waited " in log and "for a warm trainer to finish its warm-up" in log


def test_a_spare_warming_up_longer_than_the_wait_is_left_and_the_job_starts_cold(tmp_path, trainer, launcher,
                                                                                monkeypatch):
    monkeypatch.setenv("FAKE_WARM_DELAY", "30")
    monkeypatch.setattr("automl.launchers.warm.WAIT_FOR_WARMING_S", 1.0)
    launcher.launch(job(tmp_path, trainer, 0)).wait(20)
    [spare] = launcher.warm.pids()
    began = time.monotonic()
    handle = launcher.launch(job(tmp_path, trainer, 1))
    assert handle.id != str(spare) and 1.0 <= time.monotonic() - began < 5
    assert handle.wait(20).exit_code == 0
    assert "launched=cold" in (tmp_path / "trial_1" / "log.txt").read_text()


def test_spares_that_fail_their_warm_up_are_never_used_and_stop_being_started(tmp_path, trainer, launcher,
                                                                              monkeypatch):
    monkeypatch.setenv("FAKE_WARM_FAIL", "1")
    started = []
    for trial in range(MAX_FAILURES + 2):
        handle = launcher.launch(job(tmp_path, trainer, trial))
        started += launcher.warm.pids()
        assert handle.wait(20).exit_code == 0  # every job ran, cold
        assert wait_for(lambda: all(gone(pid) for pid in launcher.warm.pids()))
    assert len(set(started)) == MAX_FAILURES  # then no more spares
    logs = [(tmp_path / f"trial_{t}" / "log.txt").read_text() for t in range(MAX_FAILURES + 2)]
    assert sum("no more warm trainers for these devices" in log for log in logs) == 1
    assert "warm-up failed, not used (RuntimeError: no device)" in "".join(logs)


def test_stopping_a_handed_over_job_signals_it(tmp_path, trainer, launcher, monkeypatch):
    monkeypatch.setenv("FAKE_JOB_SECONDS", "60")
    launcher.launch(job(tmp_path, trainer, 0)).stop(grace_period=5)
    [spare] = ready_spares(launcher, 1)
    handle = launcher.launch(job(tmp_path, trainer, 1))
    assert handle.id == str(spare)
    assert wait_for(lambda: "job argv=" in (tmp_path / "trial_1" / "log.txt").read_text())
    result = handle.stop(grace_period=5)
    assert result.exit_code == 143 and result.stopped
    assert "stopping" in (tmp_path / "trial_1" / "log.txt").read_text()


def test_close_stops_idle_spares_and_zero_starts_none(tmp_path, trainer):
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=2)
    launcher.launch(job(tmp_path, trainer, 0, spares=2)).wait(20)
    spares = ready_spares(launcher, 2)
    assert len(spares) == 2
    launcher.close()
    assert wait_for(lambda: all(gone(pid) for pid in spares), 5)
    off = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=0)
    off.launch(job(tmp_path, trainer, 1)).wait(20)
    assert off.warm.pids() == []
    with pytest.raises(ConfigError, match="warm_trainers must be 0"):
        get_launcher("local", warm_trainers=-1)


def test_spares_follow_how_many_may_launch_at_once_capped_by_the_launcher(tmp_path, trainer):
    """Packing lets three trials launch together: the first launch keeps three spares
    ready, so all three are handed over warm; the launcher's warm_trainers caps the count."""
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=3)
    try:
        launcher.launch(job(tmp_path, trainer, 0, spares=4)).wait(20)
        spares = ready_spares(launcher, 3)
        assert len(spares) == 3  # 4 wanted, the launcher's cap is 3
        handles = [launcher.launch(job(tmp_path, trainer, n, spares=4)) for n in (1, 2, 3)]
        assert sorted(int(h.id) for h in handles) == sorted(spares)
        for n, h in zip((1, 2, 3), handles):
            assert h.wait(20).exit_code == 0
            assert json.loads((tmp_path / f"trial_{n}" / "job.json").read_text())["warm"] is True
    finally:
        launcher.close()


def test_idle_spares_exit_when_the_orchestrator_is_killed(tmp_path, trainer):
    """The orchestrator's SIGKILL closes the spares' stdin: they end, holding nothing."""
    script = tmp_path / "orchestrator.py"
    script.write_text(textwrap.dedent(f'''
        import sys, time
        sys.path[:0] = {sys.path!r}
        from pathlib import Path
        from automl.launchers.local import LocalLauncher
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_warm import job, ready_spares
        launcher = LocalLauncher(registry_dir=Path({str(tmp_path)!r}) / "registry", warm_trainers=1)
        launcher.launch(job(Path({str(tmp_path)!r}), Path({str(trainer)!r}), 0)).wait(20)
        print(ready_spares(launcher, 1)[0], flush=True)
        time.sleep(600)
    '''))
    orchestrator = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        spare = int(orchestrator.stdout.readline())
        assert not gone(spare)
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(10)
        assert wait_for(lambda: gone(spare), 10), "the idle spare outlived its orchestrator"
    finally:
        orchestrator.kill()
        orchestrator.wait()


@pytest.mark.parametrize("command, program", [
    (["dino", "train"], ("dino",)),
    (["/opt/venv/bin/dino", "train"], ("/opt/venv/bin/dino",)),
    (["python3", "-m", "dino", "train"], ("python3", "-m", "dino")),
    (["dino", "evaluate"], None),
    (["tao-dino", "train"], None),  # someone else's trainer: no dino warm to call
    (["train"], None),
])
def test_only_the_bundled_trainers_train_is_started_ahead(command, program):
    assert TrainerSettings(command=command).warm_program() == program


@pytest.mark.parametrize("launcher, devices, expected", [
    ("local", (0,), True),
    ("local", (), False),  # CPU trials: a spare's imports would take the running trials' cores
    ("docker", (0,), False),  # a container starts its own process
])
def test_gpu_trials_of_the_local_launcher_get_a_warm_trainer(tmp_path, launcher, devices, expected):
    from automl.config.loader import build_run_config, read_profile
    from automl.study.objective import warm_trainer

    cfg = build_run_config({"launcher": {"name": launcher}, "workspace": str(tmp_path), **read_profile("smoke")},
                           use_cpu_variant=False,
                           where="test")
    warm = warm_trainer(cfg, tmp_path / "spec.yaml", devices)
    assert (warm is not None) == expected
    if warm is not None:
        assert warm.spare_command() == ["dino", "warm", "--like", str(tmp_path / "spec.yaml")]
        assert warm.argv == ("train", "-e", str(tmp_path / "spec.yaml"))


def test_spares_started_before_the_first_trial_take_its_job(tmp_path, trainer):
    """The runner starts each GPU slot's spares before it stages the data
    (``prestart_warm_trainers``), with the environment a trial's job there gets: trial 0
    is then handed to a warm trainer too, and as many spares as may launch at once
    (the packing ceiling) are ready."""
    from automl.config.run_config import RunConfig
    from automl.study.caches import kernel_cache_env
    from automl.study.objective import prestart_warm_trainers
    from automl.study.packing import PackingPolicy
    from automl.study.slots import Slot, SlotPool

    cfg = RunConfig.model_validate({"data": {"synth": {}}, "workspace": str(tmp_path / "ws"),
                                    "trainer": {"command": [PY, "-m", "dino", "train"]}})
    policy = PackingPolicy(trials_per_slot="auto", max_trials_per_slot=2, memory_margin=0.1, min_cores_per_trial=1,
                           cpu_cores=4, n_slots=1, gpu_slots=True, card_mib=80_000)
    slots = SlotPool([Slot((0,))], policy)
    cfg.study_dir.mkdir(parents=True)
    like = cfg.study_dir / "warm_like.yaml"
    like.write_text("{}\n")
    launcher = LocalLauncher(registry_dir=tmp_path / "registry", warm_trainers=4)
    fake = (PY, str(trainer))  # the stand-in speaks dino warm's protocol
    monkey = pytest.MonkeyPatch()
    monkey.setattr(TrainerSettings, "warm_program", lambda self: fake)
    try:
        assert prestart_warm_trainers(cfg, launcher, slots, like) == 1
        spares = ready_spares(launcher, 2)
        assert launcher.warm.failures() == []
        assert len(spares) == 2  # the ceiling of 2 trials per slot, under the cap of 4
        env = {**slots.thread_env(slots.slots[0]), **kernel_cache_env(cfg)}
        first = launcher.launch(job(tmp_path, trainer, 0, devices=(0,), env=env))
        assert int(first.id) in spares
        assert first.wait(20).exit_code == 0
        assert json.loads((tmp_path / "trial_0" / "job.json").read_text())["warm"] is True
    finally:
        monkey.undo()
        launcher.close()
