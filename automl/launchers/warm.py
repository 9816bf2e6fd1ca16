"""Warm trainers: spare trainer processes, started ahead, that the local launcher hands jobs to.

A cold trial spends 8-11 s importing and, on a GPU, seconds more loading CUDA's libraries
in its first step (``bench/README.md``). A trainer that offers ``JobSpec.warm``
(``dino warm``, :mod:`dino.warm`) does that before its job exists, while other trials
train, and then becomes the job.

The pool keeps ready processes per (program, environment), as many as jobs may launch
at once on those devices (``WarmTrainer.spares``, at most the pool's ``spares``): when a
job launches, spares are started for the same key, on the guess that the next jobs on
those devices look alike. (With one spare kept, the three trials that launch together
when packing begins found one ready; bench/README.md.) A job is handed over only to a spare that said it is ready and
whose environment is exactly the job's (devices, thread limits and cache folders
included); one still warming up is waited for (it started earlier, so it is ready before
a cold start would be), and without one the job starts cold, as before. What a spare printed before its launch
goes into the job's log. A spare that fails its warm-up is never used; after
``MAX_FAILURES`` failures for one key no more are started for it, and the next job's
log says why. Idle spares read their stdin: when the orchestrator goes away (even
killed), their pipe closes and they exit; :meth:`WarmTrainers.close` stops them at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from dino.warm import READY as READY_LINE
from dino.warm import hand_over_message  # the protocol is the trainer's (light: no torch at import)

READY = READY_LINE.encode()
MAX_FAILURES = 2
# The longest a launch waits for a spare still warming up (a warm-up took 9-18 s on an
# H200, a cold start 15-20 s); past it the job starts cold.
WAIT_FOR_WARMING_S = 30.0


@dataclasses.dataclass(frozen=True)
class WarmTrainer:
    """How a job's trainer can be started ahead (``JobSpec.warm``).

    ``program`` is the trainer's command without its task (``("dino",)``); a spare runs
    ``(*program, "warm", "--like", like)`` and, handed the job, runs ``argv``
    (``("train", "-e", spec)``) as that program would. ``spares``: how many jobs like
    it may launch at once on its devices (their packing ceiling), the spares wanted
    ready for them (the launcher caps it)."""

    program: tuple[str, ...]
    like: Path
    argv: tuple[str, ...]
    spares: int = 1

    def spare_command(self) -> list[str]:
        return [*self.program, "warm", "--like", str(self.like)]


@dataclasses.dataclass
class _Spare:
    popen: subprocess.Popen[bytes]
    output: bytearray = dataclasses.field(default_factory=bytearray)
    ready: bool = False

    def refresh(self) -> bool:
        """Read what it printed; True while it is alive (ready or still warming up)."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.output += chunk
        self.ready = self.ready or READY in self.output
        return self.popen.poll() is None

    def lines(self) -> list[str]:
        text = bytes(self.output).decode(errors="replace")
        return [line for line in text.splitlines() if line.strip() and line.encode() != READY]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pipe in (self.popen.stdin, self.popen.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self.popen.wait()


class WarmTrainers:
    """The local launcher's spare trainers (see the module docstring)."""

    def __init__(self, spares: int):
        if spares < 0:
            raise ValueError(f"warm_trainers must be 0 (off) or more, not {spares}")
        self.spares = spares
        self._idle: dict[tuple, list[_Spare]] = {}
        self._failures: dict[tuple, list[str]] = {}
        self._announced: set[tuple] = set()
        self._lock = threading.Lock()  # trials launch from several threads

    @staticmethod
    def _key(warm: WarmTrainer, env: dict[str, str]) -> tuple:
        return warm.program, tuple(sorted(env.items()))

    def take(self, warm: WarmTrainer, env: dict[str, str], log_path: Path, cwd: Path,
             log) -> subprocess.Popen[bytes] | None:
        """Hand the job to a ready spare of its key and return that process, or None (start
        it cold). ``log`` is the job's log file, open for appending: notes go there.

        A spare of the key that is still warming up is waited for, up to
        ``WAIT_FOR_WARMING_S``: it started before this job, so it is ready sooner than a
        cold start would get as far (both import and warm the device up). The job's
        start-up is timed from this call, the wait included."""
        asked = time.time()
        deadline = time.monotonic() + WAIT_FOR_WARMING_S
        while True:
            with self._lock:
                popen = self._take(warm, env, log_path, cwd, log, asked)
                warming = popen is None and any(not s.ready for s in self._alive(self._key(warm, env)))
            if popen is not None:
                if time.time() - asked >= 0.5:
                    log.write(f"[automl] waited {time.time() - asked:.1f} s for a warm trainer to finish its "
                              "warm-up\n".encode())
                return popen
            if not warming or time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def _take(self, warm: WarmTrainer, env: dict[str, str], log_path: Path, cwd: Path,
              log, launched_at: float) -> subprocess.Popen[bytes] | None:
        key = self._key(warm, env)
        failures = self._failures.get(key, [])
        if len(failures) >= MAX_FAILURES and key not in self._announced:
            self._announced.add(key)
            log.write(f"[automl] no more warm trainers for these devices after {len(failures)} failures; the last: "
                      f"{failures[-1]}\n".encode())
        pool = self._alive(key)
        for spare in [s for s in pool if s.ready]:
            pool.remove(spare)
            message = hand_over_message(list(warm.argv), str(cwd), str(log_path), launched_at)
            try:
                assert spare.popen.stdin is not None
                spare.popen.stdin.write(message.encode())
                spare.popen.stdin.close()
            except OSError:  # it died just now
                spare.kill()
                continue
            with contextlib.suppress(OSError):
                assert spare.popen.stdout is not None
                spare.popen.stdout.close()
            for line in spare.lines():
                log.write(f"[automl] warm trainer (pid {spare.popen.pid}) before the launch: {line}\n".encode())
            return spare.popen
        return None

    def _alive(self, key: tuple) -> list[_Spare]:
        """The key's idle spares after reading what they printed; the ones that exited
        (a failed warm-up) are dropped and their failure recorded."""
        pool = self._idle.setdefault(key, [])
        for spare in [s for s in pool if not s.refresh()]:
            pool.remove(spare)
            self._note_failure(key, spare)
        return pool

    def _note_failure(self, key: tuple, spare: _Spare) -> None:
        code = spare.popen.wait()
        lines = spare.lines()
        reason = lines[-1] if lines else f"exit code {code} before it was ready"
        self._failures.setdefault(key, []).append(f"a spare exited with code {code}: {reason}"[:500])

    def replenish(self, warm: WarmTrainer, env: dict[str, str], cwd: Path | None) -> None:
        """Start spares for ``warm``'s key until ``min(warm.spares, spares)`` are alive
        (none once it failed ``MAX_FAILURES`` times)."""
        if not self.spares:
            return
        with self._lock:
            self._replenish(warm, env, cwd)

    def _replenish(self, warm: WarmTrainer, env: dict[str, str], cwd: Path | None) -> None:
        key = self._key(warm, env)
        pool = self._alive(key)
        wanted = min(max(warm.spares, 1), self.spares)
        while len(pool) < wanted and len(self._failures.get(key, [])) < MAX_FAILURES:
            try:
                popen = subprocess.Popen(warm.spare_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True,
                                         close_fds=True)
            except OSError as exc:
                self._failures.setdefault(key, []).append(f"cannot start {warm.program[0]!r}: {exc}")
                continue
            assert popen.stdout is not None
            os.set_blocking(popen.stdout.fileno(), False)
            pool.append(_Spare(popen))

    def pids(self) -> list[int]:
        """Process ids of the idle spares (tests, diagnostics)."""
        with self._lock:
            return [s.popen.pid for pool in self._idle.values() for s in pool]

    def ready_pids(self) -> list[int]:
        """Process ids of the idle spares that said they are ready (tests, diagnostics)."""
        with self._lock:
            return [s.popen.pid for key in list(self._idle) for s in self._alive(key) if s.ready]

    def failures(self) -> list[str]:
        """Why spares exited before a job was handed to them, oldest first (tests, diagnostics)."""
        with self._lock:
            return [reason for reasons in self._failures.values() for reason in reasons]

    def close(self) -> None:
        """Stop every idle spare now."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        for pool in self._idle.values():
            for spare in pool:
                spare.kill()
        self._idle.clear()
