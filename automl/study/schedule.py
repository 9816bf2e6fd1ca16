"""The long-lived scheduler: run an ``automl`` command at each fire time of a cron schedule.

Each run is a child process (``python -m automl ...``), so a crash or a leak in one
night never takes the scheduler down. The rules a person relies on:

- **On time, within a budget.** With ``budget_s`` the child is told its budget
  (``nightly --budget``, ``run --timeout``) and stopped if it overruns: SIGTERM (a study
  stops its jobs and re-queues them), SIGKILL after ``stop_grace_s``.
- **No overlap.** Runs are sequential here, and each holds a lock in the workspace
  (:mod:`automl.study.run_lock`), so a second scheduler (another container, a cron job)
  skips a slot whose run is still going instead of starting it twice.
- **A missed run runs once.** Fire times missed while the machine was off, suspended,
  or busy with an overrunning night collapse into one run of the latest of them, if that
  one is at most ``catch_up_s`` old; older ones are skipped and said so. The last slot
  run is kept in a state file, so a restarted scheduler does not repeat it.

What happens is emitted as typed events; :mod:`automl.ui.nightly` renders them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

from automl.config.storage import redact_url
from automl.study.cron import UTC, CronSchedule
from automl.study.run_lock import LockHeld, run_lock

DEFAULT_CATCH_UP_S = 12 * 3600.0
DEFAULT_STOP_GRACE_S = 300.0
_SLEEP_CHUNK_S = 60.0  # the clock is re-read at least this often (a suspended machine wakes late)


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """An aware datetime."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# ------------------------------------------------------------------------ events


@dataclasses.dataclass(frozen=True)
class NextRun:
    due: dt.datetime


@dataclasses.dataclass(frozen=True)
class RunStarting:
    slot: dt.datetime
    command: tuple[str, ...]  # automl arguments, passwords redacted
    late_s: float  # how long after its slot it starts (a caught-up run is late)


@dataclasses.dataclass(frozen=True)
class RunFinished:
    slot: dt.datetime
    exit_code: int
    duration_s: float
    stopped: bool  # overran its budget and was stopped


@dataclasses.dataclass(frozen=True)
class RunSkipped:
    slot: dt.datetime
    reason: str


ScheduleEvent = NextRun | RunStarting | RunFinished | RunSkipped


# ------------------------------------------------------------------------ the command of one run


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def run_arguments(args: Sequence[str], slot: dt.datetime, budget_s: float | None,
                  study_suffix: str | None = None) -> list[str]:
    """The ``automl`` arguments of the run for ``slot``.

    ``nightly`` gets the slot's date (``--night``, so a run caught up after midnight
    still names the night it belongs to) and the budget; ``run`` gets the budget as
    ``--timeout`` and, with ``study_suffix="date"``, a study of its own per night.
    """
    out = list(args)
    command = out[0] if out else ""
    if command == "nightly":
        if not _has_flag(out, "--night"):
            out += ["--night", slot.date().isoformat()]
        if budget_s is not None and not _has_flag(out, "--budget"):
            out += ["--budget", f"{budget_s:.0f}s"]
    elif command == "run":
        if budget_s is not None and not _has_flag(out, "--timeout"):
            out += ["--timeout", f"{budget_s:.0f}"]
        if study_suffix == "date":
            stamp = slot.strftime("%Y%m%d")
            if "--study-name" in out:
                i = out.index("--study-name") + 1
                out[i] = f"{out[i]}-{stamp}"
            else:
                out += ["--study-name", f"nightly-{stamp}"]
    return out


def hard_limit(args: Sequence[str], budget_s: float | None, stop_grace_s: float) -> float | None:
    """When the child is sent SIGTERM: at the budget for ``run`` (which only stops starting
    trials at ``--timeout``), a grace later for ``nightly`` (which ends itself on time)."""
    if budget_s is None:
        return None
    return budget_s + (stop_grace_s if args and args[0] == "nightly" else 0.0)


@dataclasses.dataclass
class ChildProcess:
    """Runs ``python -m automl ARGS``; SIGTERM at ``limit_s``, SIGKILL ``grace_s`` later.
    A SIGTERM or SIGINT to the scheduler is passed on to the child, which is waited for."""

    grace_s: float = DEFAULT_STOP_GRACE_S
    poll_s: float = 1.0
    program: tuple[str, ...] = (sys.executable, "-m", "automl")

    def __call__(self, args: Sequence[str], limit_s: float | None) -> tuple[int, bool]:
        proc = subprocess.Popen([*self.program, *args])
        started = time.monotonic()
        asked: list[int] = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda signum, frame: asked.append(signum))
        stopped = False
        term_at: float | None = None
        try:
            while True:
                try:
                    return proc.wait(timeout=self.poll_s), stopped
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                overran = limit_s is not None and now - started >= limit_s
                if (overran or asked) and term_at is None:
                    stopped = stopped or overran
                    proc.send_signal(signal.SIGTERM)
                    term_at = now
                elif term_at is not None and now - term_at >= self.grace_s:
                    proc.kill()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if asked:
                proc.wait()
                raise KeyboardInterrupt


# ------------------------------------------------------------------------ state and loop


@dataclasses.dataclass
class ScheduleState:
    """What survives a restart: the last slot a run was started for."""

    path: Path

    def last_slot(self) -> dt.datetime | None:
        try:
            data = json.loads(self.path.read_text())
            return dt.datetime.fromisoformat(data["last_slot"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self, slot: dt.datetime, **extra: object) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_slot": slot.isoformat(), **extra}, default=str))
        os.replace(tmp, self.path)


RunChild = Callable[[Sequence[str], float | None], tuple[int, bool]]


@dataclasses.dataclass
class Scheduler:
    schedule: CronSchedule
    args: list[str]  # automl arguments, e.g. ["nightly", "--config", "nightly.yaml"]
    state: ScheduleState
    lock_path: Path
    budget_s: float | None = None
    catch_up_s: float = DEFAULT_CATCH_UP_S
    stop_grace_s: float = DEFAULT_STOP_GRACE_S
    study_suffix: str | None = None
    clock: Clock = dataclasses.field(default_factory=SystemClock)
    run_child: RunChild | None = None
    emit: Callable[[ScheduleEvent], None] = lambda event: None

    def __post_init__(self) -> None:
        if self.run_child is None:
            self.run_child = ChildProcess(grace_s=self.stop_grace_s)

    def run_forever(self, max_runs: int | None = None) -> list[int]:
        """Wait for each slot and run it; returns the exit codes of the runs started."""
        codes: list[int] = []
        # the next slot is the one after the last slot run; on a first start, after now
        last = self.state.last_slot() or self.clock.now()
        announced: dt.datetime | None = None
        while max_runs is None or len(codes) < max_runs:
            now = self.clock.now()
            due = self.schedule.next_after(last)
            if due.astimezone(UTC) > now.astimezone(UTC):
                if due != announced:
                    self.emit(NextRun(due))
                    announced = due
                self._sleep_until(due)
                continue
            slot = self.schedule.latest_at_or_before(now)  # every missed slot collapses into this one
            late = (now.astimezone(UTC) - slot.astimezone(UTC)).total_seconds()
            last = slot
            if late > self.catch_up_s:
                self.emit(RunSkipped(slot, f"missed by {late / 3600:.1f} h, more than the catch-up window of "
                                           f"{self.catch_up_s / 3600:.1f} h (the machine was off or a run overran)"))
                self.state.record(slot, skipped=True)
                continue
            code = self._run(slot, late)
            if code is not None:
                codes.append(code)
        return codes

    def _sleep_until(self, due: dt.datetime) -> None:
        while (wait := (due.astimezone(UTC) - self.clock.now().astimezone(UTC)).total_seconds()) > 0:
            self.clock.sleep(min(wait, _SLEEP_CHUNK_S))

    def _run(self, slot: dt.datetime, late_s: float) -> int | None:
        args = run_arguments(self.args, slot, self.budget_s, self.study_suffix)
        assert self.run_child is not None
        try:
            with run_lock(self.lock_path, what=f"the scheduled run of {slot:%Y-%m-%d %H:%M %Z}"):
                self.state.record(slot, pid=os.getpid())
                self.emit(RunStarting(slot, tuple(redact_url(a) for a in args), late_s))
                started = self.clock.now()
                code, stopped = self.run_child(args, hard_limit(args, self.budget_s, self.stop_grace_s))
                duration = (self.clock.now().astimezone(UTC) - started.astimezone(UTC)).total_seconds()
                self.state.record(slot, exit_code=code)
                self.emit(RunFinished(slot, code, duration, stopped))
                return code
        except LockHeld as held:
            self.state.record(slot, skipped=True)
            self.emit(RunSkipped(slot, f"the previous run is still going: {held.holder.describe()}"))
            return None
