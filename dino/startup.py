"""Where a run's start-up goes, from the process's start to its first training step.

A 10-epoch smoke trial spent 15-20 s of its first epoch before training at full speed
(``../shared/anchors/gpu_smoke_main.h200.json``); these marks say which phase took it.
The trainer writes them as one status line (``startup``: phase -> seconds) after the
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


class StartupClock:
    """Marks phases as they end; ``phases()`` gives each phase's seconds, in order."""

    def __init__(self, start: float | None = None):
        self.start = process_start_time() if start is None else start
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
