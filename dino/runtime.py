"""What every ``dino`` task shares at run time: the stdout logger, the stop signal, the device.

Kept apart from :mod:`dino.train` so that evaluation, export and the DDP launcher use them
without importing the training loop (which imports them back), and torch-free at import so
the CLI can catch :class:`Interrupted` before any model code is loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import torch

log = functools.partial(print, flush=True)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """A termination signal arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class SignalGuard:
    """The one handler of SIGTERM / SIGINT in the trainer, installed for a ``with`` block.

    ``raise_interrupted=True`` (a training, evaluation or export process): the first
    signal raises :class:`Interrupted` in the main thread, except inside ``critical()``
    blocks (checkpoint writes), where it is raised when the block ends.
    ``raise_interrupted=False`` (the DDP parent, which must keep supervising its ranks):
    the signal is only recorded in :attr:`received` for the caller to act on.
    Repeats of a signal (the group's and a forwarded copy) change nothing. Code that does
    not hold the guard enters a critical block of the innermost active one through
    :func:`deferred_stop` (the data loaders, around receiving a batch).
    """

    def __init__(self, raise_interrupted: bool = True) -> None:
        self.raise_interrupted = raise_interrupted
        self.received: int | None = None  # the first signal seen
        self._depth = 0
        self._pending: int | None = None
        self._old: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> SignalGuard:
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            return
        self.received = signum
        if not self.raise_interrupted:
            return
        if self._depth:
            self._pending = signum
        else:
            raise Interrupted(signum)

    def critical(self) -> _CriticalBlock:
        """A block a signal must not cut short (the signal is raised at its end)."""
        return _CriticalBlock(self)


class _CriticalBlock:
    def __init__(self, guard: SignalGuard) -> None:
        self._guard = guard

    def __enter__(self) -> None:
        self._guard._depth += 1

    def __exit__(self, exc_type: object, *rest: object) -> None:
        guard = self._guard
        guard._depth -= 1
        # a block ending normally (or a loader's end of epoch) delivers the held signal
        ended = exc_type is None or (isinstance(exc_type, type) and issubclass(exc_type, StopIteration))
        if not guard._depth and guard._pending is not None and ended:
            raise Interrupted(guard._pending)


_ACTIVE: list[SignalGuard] = []  # the guards installed now, innermost last


def deferred_stop() -> contextlib.AbstractContextManager[None]:
    """A critical block of the innermost active :class:`SignalGuard` (none: no effect)."""
    return _ACTIVE[-1].critical() if _ACTIVE else contextlib.nullcontext()


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold back SIGTERM / SIGINT in this thread while the block runs.

    Processes forked inside inherit the blocked mask, so a signal sent to the whole
    process group (as launchers stop a job) stays pending in a new data-loader worker
    until :func:`ignore_stop_signals` discards it, instead of killing it half-started.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals() -> None:
    """In a helper process (a data-loader worker): ignore SIGTERM / SIGINT, then unblock them.

    The group's signal is meant for the trainer, which stops its workers in order when it
    unwinds; a worker killed by it instead makes the trainer's loader raise "DataLoader
    worker ... is killed by signal" from its shutdown at exit, a traceback in the log that
    reads like a crash. A worker whose trainer dies outright exits by itself (torch's
    parent watchdog) or with the group's SIGKILL.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # also drops a signal pending since the fork
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def cuda_allocator_defaults() -> None:
    """The trainer's CUDA allocator settings, set before the process's first CUDA allocation
    (the trainer's and a warm trainer's, ``dino.warm``); a user's own setting wins.

    Multi-scale batches change shape every step; with fixed-size segments the caching
    allocator kept ~45 GiB of a card per 320-px smoke trial (gpu_smoke_main.h200), which is
    what packing several trials on one GPU is sized by. Growable segments keep it near what
    the trial uses."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def select_device(gpu_ids: list[int], field: str) -> torch.device:
    """``cuda:<gpu_ids[0]>`` among the visible devices (CUDA_VISIBLE_DEVICES applies), else CPU.

    Raises ``SpecError`` naming ``field`` when the id is not visible.
    """
    import torch

    from dino.config import SpecError

    if not torch.cuda.is_available():
        return torch.device("cpu")
    index, count = (gpu_ids[0] if gpu_ids else 0), torch.cuda.device_count()
    if index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise SpecError(f"{field} {gpu_ids}: device {index} is not visible ({count} visible, "
                        f"CUDA_VISIBLE_DEVICES={visible}); gpu ids count from 0 among the visible devices")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
