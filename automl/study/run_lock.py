"""At most one night at a time, across processes: a non-blocking ``flock`` in the workspace.

Unlike :func:`automl.datasets.locks.file_lock` (which waits: the data are then ready), a
run that finds the lock held must not wait for it — it is skipped, and says who holds it.
The holder writes its pid, host and start time into the file for that message. The kernel
drops the lock when the holder dies, even by ``kill -9``, so a crashed night never blocks
the next one; the file left behind is harmless. Works across hosts only on a filesystem
whose ``flock`` does (NFSv4, not every network filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Iterator


@dataclasses.dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str
    since: str
    what: str

    def describe(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid else "another process"
        return f"{self.what or 'a run'} ({who}, since {self.since or '?'})"


class LockHeld(Exception):
    """The lock is held by a live process; ``holder`` says which."""

    def __init__(self, path: Path, holder: LockHolder) -> None:
        super().__init__(f"{path} is held by {holder.describe()}")
        self.path = path
        self.holder = holder


def read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    return LockHolder(data.get("pid"), data.get("host", "?"), data.get("since", ""), data.get("what", ""))


@contextlib.contextmanager
def run_lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path`` exclusively for the block, or raise :class:`LockHeld` at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, read_holder(path)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "since": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def is_held(path: Path) -> bool:
    """True while some process holds ``path`` (this one included, through another fd)."""
    if not Path(path).exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
