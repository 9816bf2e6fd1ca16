"""Device slots: which GPUs each concurrent trial gets.

One slot is a group of ``num_gpus`` devices; as many trials run at once as there are
slots. Without GPUs there are ``cpu_parallel`` CPU slots with no devices.
Trials see their slot's devices renumbered from 0 (``CUDA_VISIBLE_DEVICES`` for local
jobs, device requests for containers), so ``train.gpu_ids`` is always ``0..k-1``.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator, Sequence

from automl.errors import ConfigError


def detect_gpus() -> list[int]:
    """GPU indices seen by ``nvidia-smi`` (no torch import in the orchestrator)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def plan_slots(devices: str | Sequence[int], num_gpus: int, cpu_parallel: int) -> list[tuple[int, ...]]:
    """Group devices into slots of ``num_gpus``; ``[()] * cpu_parallel`` on the CPU."""
    if devices == "cpu":
        return [()] * cpu_parallel
    gpus = detect_gpus() if devices == "auto" else [int(d) for d in devices]
    if not gpus:
        return [()] * cpu_parallel
    if len(gpus) < num_gpus:
        raise ConfigError(
            f"train.num_gpus is {num_gpus} but only {len(gpus)} GPU(s) are available "
            f"({gpus}); lower trainer.num_gpus or list more devices"
        )
    usable = len(gpus) - len(gpus) % num_gpus
    return [tuple(gpus[i : i + num_gpus]) for i in range(0, usable, num_gpus)]


class SlotPool:
    """Hands out slots to concurrent trials (thread-safe)."""

    def __init__(self, slots: list[tuple[int, ...]]) -> None:
        self.slots = slots
        self._free: queue.Queue[tuple[int, ...]] = queue.Queue()
        for slot in slots:
            self._free.put(slot)

    @property
    def size(self) -> int:
        return len(self.slots)

    @contextmanager
    def acquire(self) -> Iterator[tuple[int, ...]]:
        slot = self._free.get()
        try:
            yield slot
        finally:
            self._free.put(slot)
