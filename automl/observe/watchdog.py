"""Limits on one running job: a wall-clock limit per trial and a stall limit.

A trainer that hangs (a dead data-loader worker, a collective waiting on a rank that
died, a deadlock in a native library) writes nothing more and never exits; without a
limit it holds its slot, and the study, forever. The stall limit watches the files a
job writes (its stdout log and ``train/status.json``): no new byte in either for
``stall_timeout_s`` seconds is a stall. The wall-clock limit bounds one attempt of a
trial (a retry starts its own clock). Each overrun comes back as a diagnosis saying what
was exceeded, where the job was, and what to change.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from automl.observe.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class JobLimits:
    trial_timeout_s: float | None = None  # one attempt of a trial, launch to exit
    stall_timeout_s: float | None = None  # no new bytes in any watched file


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file grows, is rewritten or replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class JobWatchdog:
    """Call :meth:`check` on every poll of a running job; it returns a diagnosis once a
    limit is passed (the caller stops the job), else None."""

    def __init__(self, paths: Sequence[Path], limits: JobLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.limits = limits
        self._clock = clock
        self.started = self.last_change = clock()
        self._seen = [_signature(p) for p in self.paths]

    def check(self, where: str = "") -> Diagnosis | None:
        """``where``: the job's progress in words ("at epoch 3 of 10"), for the message."""
        now = self._clock()
        seen = [_signature(p) for p in self.paths]
        if seen != self._seen:
            self._seen, self.last_change = seen, now
        at = f" {where}" if where else ""
        limit = self.limits.trial_timeout_s
        if limit is not None and now - self.started > limit:
            return Diagnosis(
                "trial_timeout",
                f"The job ran for {_duration(now - self.started)}{at}, past budget.trial_timeout_s "
                f"({_duration(limit)}); it was stopped.",
                "Raise budget.trial_timeout_s, or make a trial shorter (train.num_epochs, the dataset, the "
                "input size); the epochs reported so far stay on the trial.",
                f"trial_timeout_s={limit:g}",
            )
        limit = self.limits.stall_timeout_s
        if limit is not None and now - self.last_change > limit:
            files = " or ".join(p.name for p in self.paths)
            return Diagnosis(
                "stalled",
                f"The job wrote nothing to {files} for {_duration(now - self.last_change)}{at} "
                f"(budget.stall_timeout_s {_duration(limit)}): it hung, and was stopped.",
                "Look at the end of the job's log for where it stopped. Usual causes: a data-loader worker that "
                "died or deadlocked (lower dataset.workers), a multi-GPU collective waiting for a rank that died "
                "(NCCL), a full disk. If a phase legitimately runs silent that long (COCO evaluation of a very "
                "large validation set), raise budget.stall_timeout_s.",
                f"stall_timeout_s={limit:g}",
            )
        return None
