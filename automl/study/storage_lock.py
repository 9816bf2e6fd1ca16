"""A lock that every worker of one study takes, whatever host it runs on: the study's
storage holds it.

Deciding whether a trial may start (:mod:`automl.study.budget`) and which worker exports
the best model (:mod:`automl.study.export_claim`) are read-then-write steps that two
workers must not interleave. PostgreSQL and MySQL give named locks tied to a database
session (``pg_advisory_lock``, ``GET_LOCK``); a SQLite file is only usable from one host,
so an ``flock`` on a file beside it serves. Any other database gets a lock of this
process only, and :attr:`StorageLock.cross_process` says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import Iterator

import sqlalchemy
from sqlalchemy.engine import Engine, make_url

_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def _local_lock(key: str) -> threading.Lock:
    with _LOCAL_GUARD:
        return _LOCAL.setdefault(key, threading.Lock())


def _key64(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


class StorageLock:
    """``with StorageLock(url, engine, "budget:<study>").hold():`` holds the named lock."""

    def __init__(self, url: str, engine: Engine | None, name: str) -> None:
        self.url = url
        self.engine = engine
        self.name = name
        self.dialect = make_url(url).get_backend_name()
        self.cross_process = self.dialect in ("sqlite", "postgresql", "mysql")

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with _local_lock(f"{self.url}\0{self.name}"):  # threads of this process, on every backend
            if self.dialect == "sqlite":
                with self._file_lock():
                    yield
            elif self.dialect == "postgresql" and self.engine is not None:
                with self._pg_lock():
                    yield
            elif self.dialect == "mysql" and self.engine is not None:
                with self._mysql_lock():
                    yield
            else:
                yield

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            yield  # an in-memory database lives in this process only
            return
        safe = hashlib.sha1(self.name.encode()).hexdigest()[:12]
        path = Path(f"{database}.{safe}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        assert self.engine is not None
        key = _key64(self.name)
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    @contextlib.contextmanager
    def _mysql_lock(self) -> Iterator[None]:  # pragma: no cover - no MySQL server in the tests
        assert self.engine is not None
        name = hashlib.sha1(self.name.encode()).hexdigest()[:60]
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
