"""What every launcher keeps about its jobs: the worker that owns them, ``job.json`` in
the results dir, and the jobs it is watching right now.

A worker is the orchestrator process that launched a job. It is named by
``host:pid:start ticks``: a pid alone is not an identity, since after a crash the
kernel may give it to an unrelated process, and (pid, start time) is
(:mod:`automl.launchers._procfs`). Recovery reads the same identity to tell a dead
worker from a live one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Generic, Protocol, TypeVar

from automl.launchers import _procfs
from automl.launchers.base import JobResult

JOB_RECORD = "job.json"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class WorkerId:
    """An orchestrator process: where it runs, its pid and its start time in clock ticks."""

    host: str
    pid: int
    start_ticks: int | None  # None in ids written before start times were recorded

    def __str__(self) -> str:
        ticks = "" if self.start_ticks is None else f":{self.start_ticks}"
        return f"{self.host}:{self.pid}{ticks}"

    @classmethod
    def parse(cls, text: str) -> WorkerId | None:
        """``host:pid[:ticks]`` -> a WorkerId; None for anything else."""
        parts = str(text).split(":")
        if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
            return cls(":".join(parts[:-2]), int(parts[-2]), int(parts[-1]))
        if len(parts) >= 2 and parts[-1].isdigit():
            return cls(":".join(parts[:-1]), int(parts[-1]), None)
        return None

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Is this very process still running here? (Only answerable on its own host;
        an id without a start time counts as alive while its pid runs.)"""
        if not self.on_this_host:
            raise ValueError(f"worker {self} runs on another host: its liveness is not visible here")
        if not _procfs.is_running(self.pid):
            return False
        return self.start_ticks is None or _procfs.start_ticks(self.pid) == self.start_ticks


def current_worker() -> WorkerId:
    """This orchestrator process."""
    pid = os.getpid()
    return WorkerId(socket.gethostname(), pid, _procfs.start_ticks(pid))


def worker_id() -> str:
    """:func:`current_worker` as text: the trials' ``worker`` attribute, the containers' label."""
    return str(current_worker())


def write_record(path: Path, data: dict[str, Any]) -> None:
    """Write ``job.json`` (or a registry entry) atomically: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_record(path: Path) -> dict[str, Any] | None:
    """A record as written, or None when it is missing or not a JSON object."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return None


def update_record(path: Path, match: Callable[[dict[str, Any]], bool] | None = None, **fields: Any) -> None:
    """Add ``fields`` to an existing record (one that ``match`` accepts), atomically;
    a missing or foreign record is left alone."""
    data = read_record(path)
    if data is None or (match is not None and not match(data)):
        return
    data.update(fields)
    with contextlib.suppress(OSError):
        write_record(path, data)


def record_result(path: Path, result: JobResult, match: Callable[[dict[str, Any]], bool] | None = None) -> None:
    """How the job ended, added to its ``job.json``."""
    update_record(path, match, exit_code=result.exit_code, oom_killed=result.oom_killed,
                  stopped=result.stopped, ended_at=now())


class _Handle(Protocol):
    @property
    def result(self) -> JobResult | None: ...


H = TypeVar("H", bound=_Handle)


class LiveJobs(Generic[H]):
    """The jobs a launcher started and is still watching, keyed by pid or container id.

    Several objective threads launch at once, so every access holds a lock; finished
    jobs are dropped as new ones arrive.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Any, H] = {}

    def add(self, key: Any, handle: H) -> None:
        with self._lock:
            self._jobs = {k: h for k, h in self._jobs.items() if h.result is None}
            self._jobs[key] = handle

    def running(self, key: Any) -> H | None:
        """The watched job under ``key`` if it has not ended, else None."""
        with self._lock:
            handle = self._jobs.get(key)
        return handle if handle is not None and handle.result is None else None

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._jobs

    def values(self) -> list[H]:
        with self._lock:
            return list(self._jobs.values())
