"""The local launcher: one subprocess per trial on this host.

Each job runs in its own session (so its own process group): stopping it signals the
whole group, data-loader workers included, and a Ctrl-C in the orchestrator's terminal
does not reach it (the orchestrator stops jobs itself, in order). Output goes to
``job.log_path``, appended, so a resumed trial keeps its earlier log.

Every job leaves two small JSON records: ``<results_dir>/job.json`` (for people and
tools) and one in the registry directory, removed when the job ends under our watch.
Records still there after the orchestrator died are orphans; :meth:`reap_orphans`
stops them, checking boot id and process start time so a recycled pid is never hit.

A job whose trainer can start ahead (``JobSpec.warm``) is handed to a spare trainer that
already imported and warmed its device up, when one is ready (:mod:`automl.launchers.warm`;
``launcher.options.warm_trainers``, 0 for off). That process is then the job, exactly as
a cold one: its pid, group, log and exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from automl.launchers import _procfs
from automl.launchers.base import JobResult, JobSpec, wait_by_polling
from automl.launchers.records import JOB_RECORD, LiveJobs, current_worker, now, read_record, record_result, write_record
from automl.launchers.warm import WarmTrainer, WarmTrainers


def default_registry_dir() -> Path:
    """``$AUTOML_LOCAL_JOBS_DIR``, else ``$XDG_STATE_HOME/automl/local-jobs``."""
    if env := os.environ.get("AUTOML_LOCAL_JOBS_DIR"):
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "automl" / "local-jobs"


def _study_dir_name(study_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name)[:80]
    return f"{safe}-{hashlib.sha1(study_name.encode()).hexdigest()[:8]}"


def _one_line(command: tuple[str, ...]) -> str:
    """The command as a shell would take it, on one log line."""
    return shlex.join(command).replace("\r", "\\r").replace("\n", "\\n")


def _exit_code(returncode: int) -> int:
    """Popen's -N for 'killed by signal N' becomes the shell's 128+N, as Docker reports."""
    return 128 - returncode if returncode < 0 else returncode


# seconds the rest of a job's process group gets after its leader exited when stopped
LEFTOVER_GRACE = 0.5


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_empty(pgid: int, deadline: float) -> bool:
    while _procfs.group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class LocalJob:
    """A running local job (implements :class:`automl.launchers.base.JobHandle`)."""

    def __init__(
        self,
        job: JobSpec,
        popen: subprocess.Popen[bytes],
        record_paths: tuple[Path, ...],
        registry_path: Path,
        oom_before: int | None,
    ) -> None:
        self.job = job
        self._popen = popen
        self._record_paths = record_paths
        self._registry_path = registry_path
        self._oom_before = oom_before
        self._stopped = False
        self._killed_by_us = False
        self._result: JobResult | None = None

    @property
    def id(self) -> str:
        return str(self._popen.pid)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def _leader_exited(self) -> bool:
        """Has the leader exited? It is left a zombie (not reaped), so its pid, which is
        the group id, cannot be reused while we signal the group."""
        if self._popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    @property
    def result(self) -> JobResult | None:
        return self._result

    def poll(self) -> JobResult | None:
        if self._result is None and self._leader_exited():
            self._finish()
        return self._result

    def wait(self, timeout: float | None = None) -> JobResult:
        return wait_by_polling(self, timeout, 0.05)

    def stop(self, grace_period: float = 10.0) -> JobResult:
        """SIGTERM the job's group; SIGKILL what is left after ``grace_period`` s.

        Once the leader (the trainer, which writes the checkpoints) has exited, what is
        left of its group gets :data:`LEFTOVER_GRACE` s, not the whole grace period:
        data-loader workers that inherited the trainer's SIGTERM handler outlive it by
        seconds (measured: 3 s with 2 workers on CPU) and would hold the stop that long."""
        if self.poll() is not None:
            return self._result  # type: ignore[return-value]
        self._stopped = True
        pgid = self._popen.pid  # session leader: pgid == pid
        now = time.monotonic()
        deadline, leader_gone = now + max(0.0, grace_period), None
        _signal_group(pgid, signal.SIGTERM)
        while not ((exited := self._leader_exited()) and not _procfs.group_members(pgid)):
            now = time.monotonic()
            if exited and leader_gone is None:
                leader_gone = now
            if now >= deadline or (leader_gone is not None and now - leader_gone >= LEFTOVER_GRACE):
                self._killed_by_us = not exited
                _signal_group(pgid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self._popen.wait()
        self._finish()
        return self._result  # type: ignore[return-value]

    def _finish(self) -> None:
        if self._popen.returncode is None:
            # children that outlived the leader (workers) would hold the GPU: end them
            # while the unreaped leader still reserves the group id, then reap it
            _signal_group(self._popen.pid, signal.SIGKILL)
        returncode = self._popen.wait()
        oom = False
        if returncode == -signal.SIGKILL and not self._killed_by_us and self._oom_before is not None:
            after = _procfs.oom_kill_count()
            oom = after is not None and after > self._oom_before
        self._result = JobResult(exit_code=_exit_code(returncode), oom_killed=oom, stopped=self._stopped)
        with contextlib.suppress(FileNotFoundError):
            self._registry_path.unlink()
        for path in self._record_paths:
            record_result(path, self._result)


class _UnstartableJob:
    """A job whose command could not be executed: already over, like a shell's 126/127."""

    def __init__(self, job: JobSpec, exit_code: int) -> None:
        self.job = job
        self._result = JobResult(exit_code=exit_code)

    @property
    def id(self) -> str:
        return "not-started"

    @property
    def result(self) -> JobResult:
        return self._result

    def poll(self) -> JobResult:
        return self._result

    def wait(self, timeout: float | None = None) -> JobResult:
        return self._result

    def stop(self, grace_period: float = 10.0) -> JobResult:
        return self._result


class LocalLauncher:
    """Runs each job as a subprocess of this orchestrator, pinned by ``CUDA_VISIBLE_DEVICES``."""

    name = "local"

    def __init__(
        self,
        registry_dir: str | os.PathLike[str] | None = None,
        reap_grace_period: float = 10.0,
        extra_env: dict[str, str] | None = None,
        warm_trainers: int = 4,
    ) -> None:
        """``warm_trainers``: the most spare trainers kept started ahead per device set, for
        jobs whose trainer offers it (``JobSpec.warm``, :mod:`automl.launchers.warm`: as
        many as may launch at once there); 0 starts every job cold."""
        self.registry_dir = Path(registry_dir) if registry_dir else default_registry_dir()
        self.reap_grace_period = reap_grace_period
        self.extra_env = dict(extra_env or {})
        self._live: LiveJobs[LocalJob] = LiveJobs()
        self.warm = WarmTrainers(warm_trainers)

    def _env(self, job: JobSpec) -> dict[str, str]:
        return self._env_for(job.devices, job.env)

    def _env_for(self, devices: tuple[int, ...], job_env: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # progress reaches the log as it happens
        env.update(self.extra_env)
        env.update(job_env)
        # the slot pin wins over anything inherited: "" hides every GPU from a CPU job
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
        return env

    def prestart(self, warm: WarmTrainer, devices: tuple[int, ...], job_env: dict[str, str],
                 cwd: Path | None = None) -> None:
        """Start the spares for jobs on ``devices`` with ``job_env`` (``JobSpec.env``) before
        the first of them exists, so that it too is handed to a warm trainer: the
        orchestrator calls this before it stages the data."""
        self.warm.replenish(warm, self._env_for(devices, job_env), cwd)

    def launch(self, job: JobSpec) -> LocalJob | _UnstartableJob:
        job.results_dir.mkdir(parents=True, exist_ok=True)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        oom_before = _procfs.oom_kill_count()
        env = self._env(job)
        with open(job.log_path, "ab", buffering=0) as log:
            log.write(
                f"[automl] {now()} trial {job.trial_number} of study {job.study_name!r}: "
                f"{_one_line(job.command)}\n".encode()
            )
            popen = None
            if job.warm is not None:
                popen = self.warm.take(job.warm, env, job.log_path, job.workdir or Path.cwd(), log)
            warm = popen is not None
            if popen is None:
                try:
                    popen = subprocess.Popen(
                        list(job.command),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=job.workdir,
                        env=env,
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as exc:  # command missing or not executable
                    code = 127 if isinstance(exc, FileNotFoundError) else 126
                    log.write(f"[automl] cannot start {job.command[0]!r}: {exc}\n".encode())
                    return _UnstartableJob(job, code)
        record = {
            "launcher": self.name,
            "study": job.study_name,
            "trial": job.trial_number,
            "pid": popen.pid,
            "pgid": popen.pid,
            "start_ticks": _procfs.start_ticks(popen.pid),
            "boot_id": _procfs.boot_id(),
            "host": socket.gethostname(),
            "worker": str(current_worker()),
            "command": list(job.command),
            "results_dir": str(job.results_dir),
            "log_path": str(job.log_path),
            "devices": list(job.devices),
            "started_at": now(),
            "warm": warm,  # handed to a trainer started ahead (automl.launchers.warm)
        }
        registry_path = (
            self.registry_dir
            / _study_dir_name(job.study_name)
            / f"trial_{job.trial_number}_{popen.pid}.json"
        )
        job_json = job.results_dir / JOB_RECORD
        write_record(job_json, record)
        write_record(registry_path, record)
        handle = LocalJob(job, popen, (job_json,), registry_path, oom_before)
        self._live.add(popen.pid, handle)
        if job.warm is not None:  # the next job on these devices finds a trainer ready
            self.warm.replenish(job.warm, env, job.workdir)
        return handle

    def close(self) -> None:
        """Stop the idle warm trainers (jobs are not touched). Idle ones also exit by
        themselves when this process ends: their stdin closes."""
        self.warm.close()

    def reap_orphans(self, study_name: str, keep_trial_numbers: set[int]) -> list[str]:
        """Stop live jobs of ``study_name`` whose trial is not in ``keep_trial_numbers``.

        Only jobs recorded on this host since its last boot are considered; jobs this
        launcher started and still watches are never touched. Records of jobs that are
        already gone are removed.
        """
        folder = self.registry_dir / _study_dir_name(study_name)
        stopped: list[str] = []
        if not folder.is_dir():
            return stopped
        host, boot = socket.gethostname(), _procfs.boot_id()
        for path in sorted(folder.glob("trial_*.json")):
            record = read_record(path)
            if record is None:
                continue  # half-written or foreign: leave it alone
            try:
                pid, pgid, trial = int(record["pid"]), int(record["pgid"]), int(record["trial"])
            except (ValueError, KeyError, TypeError):
                continue
            if record.get("host") != host or record.get("study") != study_name:
                continue
            own = self._live.running(pid)
            if own is not None and own.poll() is None:
                continue
            if record.get("boot_id") != boot:
                path.unlink(missing_ok=True)  # from before a reboot: nothing can be alive
                continue
            if trial in keep_trial_numbers:
                continue
            if not self._is_our_job(pid, pgid, record.get("start_ticks")):
                path.unlink(missing_ok=True)
                continue
            self._stop_foreign_group(pgid)
            stopped.append(f"trial {trial} (pid {pid}, {_one_line(tuple(record.get('command', [])))[:200]})")
            path.unlink(missing_ok=True)
        return stopped

    @staticmethod
    def _is_our_job(pid: int, pgid: int, recorded_ticks: Any) -> bool:
        """Is anything of this job still running, and is it really this job?"""
        if _procfs.is_running(pid):
            # alive leader: it must be the very process we started
            return recorded_ticks is not None and _procfs.start_ticks(pid) == recorded_ticks
        # leader gone: a pid stays reserved while its process group has members, so
        # members of group ``pgid`` are leftovers of this job (started after it)
        members = _procfs.group_members(pgid)
        return bool(members) and all(
            (_procfs.start_ticks(m) or 0) >= (recorded_ticks or 0) for m in members
        )

    def _stop_foreign_group(self, pgid: int) -> None:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_group_empty(pgid, time.monotonic() + self.reap_grace_period):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_empty(pgid, time.monotonic() + 5.0)
