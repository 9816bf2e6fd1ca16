"""Where a run's start-up goes, from the process's start to its first training step.

A 10-epoch smoke trial spent 15-20 s of its first epoch before training at full speed
(``../shared/anchors/gpu_smoke_main.h200.json``); these marks say which phase took it.
A job handed to a warm trainer (``dino.warm``) is timed from the hand-off: the imports
and the CUDA warm-up it skipped ran before its launch, beside other trials. The
trainer writes them as one status line (``startup``: phase -> seconds) after the
first step, so an orchestrator or a benchmark can read them without parsing stdout.
"""

from __future__ import annotations

import os
import time


def process_start_time() -> float:
    """Wall-clock time this process started (Linux ``/proc``), else now."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks since boot
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


# Set by a warm trainer (``dino.warm``) when a job is handed to it: the job was launched
# then, not when this process started (its imports and warm-up came before the launch).
_HANDED_OVER: dict[str, float] = {}


def handed_over(launched_at: float, warm_s: float) -> None:
    """Record that this process took a job launched at ``launched_at`` (wall clock) after a
    warm-up of ``warm_s`` s that ran before it."""
    _HANDED_OVER.update(launched_at=launched_at, warm_s=warm_s)


def launch_time() -> float:
    """When this process's job was launched: the hand-off to a warm trainer, else the
    process's start."""
    return _HANDED_OVER.get("launched_at") or process_start_time()


def warm_trainer() -> dict[str, float] | None:
    """``{"launched_at", "warm_s"}`` when this job runs in a warm trainer, else None."""
    return dict(_HANDED_OVER) or None


class StartupClock:
    """Marks phases as they end; ``phases()`` gives each phase's seconds, in order, from
    the job's launch (``launch_time``)."""

    def __init__(self, start: float | None = None):
        self.start = launch_time() if start is None else start
        self._marks: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        self._marks.append((phase, time.time()))

    def phases(self) -> dict[str, float]:
        out, previous = {}, self.start
        for phase, at in self._marks:
            out[phase] = round(max(0.0, at - previous), 2)
            previous = at
        return out

    def total(self) -> float:
        return round(self._marks[-1][1] - self.start, 2) if self._marks else 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.phases().items())
        return f"{self.total():.1f} s to the first step ({parts})"
