"""Device slots and the trials that share them.

One slot is a group of ``trainer.num_gpus`` devices (or the CPU, with no devices). A
slot holds up to ``devices.trials_per_slot`` trials at once (:mod:`automl.study.packing`
decides how many for ``auto``); every trial on a slot gets all of the slot's devices,
renumbered from 0 (``CUDA_VISIBLE_DEVICES`` for local jobs, device requests for
containers), so ``train.gpu_ids`` is always ``0..k-1``.

:class:`SlotPool` hands slots to the objective's threads: a trial goes to the least
occupied slot with room, one marked to run alone waits for an empty slot and keeps it
to itself (new trials wait meanwhile, so a slot does drain). Each :class:`Lease` knows
which trials ran beside it, for the trial's attributes and the out-of-memory retry.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

from automl.config.run_config import RunConfig
from automl.errors import ConfigError
from automl.study.events import Level, Note, Observer, ignore
from automl.study.packing import CUDA_CONTEXT_MIB, PackingPolicy


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    memory_mib: int | None  # total memory of the card; None when nvidia-smi did not say


def query_gpus() -> list[GpuInfo]:
    """GPUs seen by ``nvidia-smi``, with their memory (no torch import in the orchestrator)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, memory = (part.strip() for part in line.partition(","))
        if index.isdigit():
            gpus.append(GpuInfo(int(index), int(float(memory)) if memory.replace(".", "", 1).isdigit() else None))
    return gpus


def detect_gpus() -> list[int]:
    """GPU indices seen by ``nvidia-smi``."""
    return [g.index for g in query_gpus()]


@dataclasses.dataclass(frozen=True)
class Slot:
    """A group of devices that trials run on together; ``()`` is the CPU."""

    devices: tuple[int, ...]

    @property
    def name(self) -> str:
        return ",".join(f"cuda:{d}" for d in self.devices) or "cpu"

    @classmethod
    def parse(cls, name: str | None) -> Slot:
        """The slot a recorded :attr:`name` (a trial's ``device`` attribute) stands for;
        parts that are not ``cuda:<index>`` are skipped, so ``cpu`` or nothing is the CPU."""
        parts = [part.partition(":") for part in (name or "").split(",")]
        return cls(tuple(int(index) for kind, _, index in parts if kind == "cuda" and index.isdigit()))


def plan_slots(use: Literal["auto", "cpu"] | Sequence[int], num_gpus: int,
               gpus: Sequence[int] | None = None) -> list[Slot]:
    """Group devices into slots of ``num_gpus``; one CPU slot when no GPU is in use.
    ``gpus``: the detected indices (for ``use == "auto"``; detected here when None)."""
    if use == "cpu":
        return [Slot(())]
    found = list(gpus) if gpus is not None else detect_gpus()
    chosen = found if use == "auto" else [int(d) for d in use]
    if not chosen:
        return [Slot(())]
    if len(chosen) < num_gpus:
        raise ConfigError(
            f"train.num_gpus is {num_gpus} but only {len(chosen)} GPU(s) are available "
            f"({chosen}); lower trainer.num_gpus or list more devices"
        )
    usable = len(chosen) - len(chosen) % num_gpus
    return [Slot(tuple(chosen[i : i + num_gpus])) for i in range(0, usable, num_gpus)]


def card_memory(slots: Sequence[Slot], gpus: Sequence[GpuInfo], configured_mib: int | None) -> int | None:
    """The smallest card memory among the slots' devices: the configured value, else
    what nvidia-smi says; None when neither knows."""
    if configured_mib is not None:
        return configured_mib
    memory = {g.index: g.memory_mib for g in gpus}
    values = [memory.get(d) for s in slots for d in s.devices]
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


class SlotWaitCancelled(Exception):
    """The run was stopped while a trial waited for room on a slot."""


@dataclasses.dataclass
class Lease:
    """One trial's place on a slot, from launch to the job's end."""

    slot: Slot
    trial: int
    alone: bool
    packed_with: tuple[int, ...]  # trials on the slot when this one started
    env: dict[str, str]  # thread limits for this trial's share of the cores
    neighbours: set[int] = dataclasses.field(default_factory=set)  # every trial beside it, ever
    most_at_once: int = 1  # the slot's largest occupancy during the lease, this trial included
    peak_mib: int | None = None  # the largest peak GPU memory its job reported
    _pool: SlotPool | None = dataclasses.field(default=None, repr=False)

    @property
    def was_packed(self) -> bool:
        return bool(self.neighbours)

    def report_peak(self, peak_mib: int) -> None:
        """The job reported ``peak_mib`` of GPU memory (may let ``auto`` pack more)."""
        if self.peak_mib is not None and peak_mib <= self.peak_mib:
            return
        self.peak_mib = peak_mib
        if self._pool is not None:
            self._pool.report_peak(self.trial, peak_mib)

    def report_oom(self) -> None:
        """The job ran out of GPU memory beside neighbours (``auto`` packs fewer from now)."""
        if self._pool is not None:
            self._pool.report_oom(self)


class SlotPool:
    """Hands out slots to concurrent trials (thread-safe)."""

    def __init__(self, slots: list[Slot], policy: PackingPolicy, on_event: Observer = ignore) -> None:
        if not slots:
            raise ValueError("a slot pool needs at least one slot")
        self.slots = slots
        self.policy = policy
        self.on_event = on_event
        self._cond = threading.Condition()
        self._on: dict[Slot, list[Lease]] = {s: [] for s in slots}
        self._alone_waiting = 0
        self._peak_mib: int | None = None
        self._oom_cap: int | None = None
        self._said_no_peak = False

    # -- sizes ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The most trials that may ever run at once (the number of worker threads)."""
        return len(self.slots) * self.policy.ceiling

    @property
    def capacity(self) -> int:
        """Trials per slot allowed now."""
        cap = self.policy.trials_for(self._peak_mib)
        return cap if self._oom_cap is None else max(1, min(cap, self._oom_cap))

    def occupancy(self) -> dict[str, tuple[int, ...]]:
        """Which trials are on which slot now (by slot name)."""
        with self._cond:
            return {s.name: tuple(lease.trial for lease in leases) for s, leases in self._on.items()}

    def thread_env(self, slot: Slot) -> dict[str, str]:
        """Each trial's share of the cores when several may run at once, so BLAS and
        torch threads do not oversubscribe them (ten times slower on a busy 2-core host).
        A lone trial per GPU slot keeps the trainer's defaults."""
        if slot.devices and self.policy.ceiling == 1:
            return {}
        threads = str(max(1, self.policy.cpu_cores // self.size))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    # -- leases -----------------------------------------------------------------------
    def _pick(self, alone: bool) -> Slot | None:
        exclusive = {s for s, leases in self._on.items() if any(lease.alone for lease in leases)}
        if alone:
            return next((s for s in self.slots if not self._on[s]), None)
        # the least occupied slots are kept for trials waiting to run alone, so they drain
        by_load = sorted((s for s in self.slots if s not in exclusive), key=lambda s: len(self._on[s]))
        free = by_load[self._alone_waiting:]
        return next((s for s in free if len(self._on[s]) < self.capacity), None)

    @contextmanager
    def acquire(self, trial: int, alone: bool = False, cancel: threading.Event | None = None) -> Iterator[Lease]:
        """A slot for ``trial``, blocking until one has room (an empty one if ``alone``).
        Raises :class:`SlotWaitCancelled` if ``cancel`` is set while it waits."""
        with self._cond:
            if alone:
                self._alone_waiting += 1
            try:
                while (slot := self._pick(alone)) is None:
                    if cancel is not None and cancel.is_set():
                        raise SlotWaitCancelled(f"trial {trial} stopped while it waited for a slot")
                    self._cond.wait(timeout=0.5 if cancel is not None else None)
            finally:
                if alone:
                    self._alone_waiting -= 1
            others = self._on[slot]
            lease = Lease(slot, trial, alone, tuple(sorted(o.trial for o in others)), self.thread_env(slot),
                          _pool=self)
            for other in others:
                other.neighbours.add(trial)
                lease.neighbours.add(other.trial)
            others.append(lease)
            for held in others:
                held.most_at_once = max(held.most_at_once, len(others))
        try:
            yield lease
        finally:
            with self._cond:
                self._on[slot].remove(lease)
                self._cond.notify_all()
            self._no_peak_note(lease)

    def _no_peak_note(self, lease: Lease) -> None:
        """``auto`` waits for a peak that a trainer without the status field never sends."""
        auto_gpu = self.policy.trials_per_slot == "auto" and lease.slot.devices and self.policy.card_mib is not None
        if not auto_gpu or lease.peak_mib is not None or self._peak_mib is not None or self._said_no_peak:
            return
        self._said_no_peak = True
        self.on_event(Note(
            f"packing: trial {lease.trial} ended without reporting its peak GPU memory (status field "
            "peak_gpu_memory_mib); until a trial does, devices.trials_per_slot auto keeps one trial per slot "
            "(a trainer that never writes it, such as TAO's, packs only with a number of trials)",
            Level.WARNING))

    # -- what jobs report -------------------------------------------------------------
    def report_peak(self, trial: int, peak_mib: int) -> None:
        with self._cond:
            if self._peak_mib is not None and peak_mib <= self._peak_mib:
                return
            before = self.capacity
            self._peak_mib = peak_mib
            after = self.capacity
            if after != before:
                self._cond.notify_all()
        if after != before and self.policy.card_mib is not None:
            self.on_event(Note(
                f"packing: trial {trial} peaked at {peak_mib / 1024:.1f} GiB of GPU memory (+{CUDA_CONTEXT_MIB} MiB "
                f"context) on {self.policy.card_mib / 1024:.1f} GiB cards with {self.policy.memory_margin:.0%} kept "
                f"free: {after} trial(s) per slot from now (at most {self.policy.ceiling})"
            ))

    def report_oom(self, lease: Lease) -> None:
        if self.policy.trials_per_slot != "auto":
            return  # the user chose the count; the trial is still retried alone
        with self._cond:
            cap = max(1, lease.most_at_once - 1)
            lowered = self._oom_cap is None or cap < self._oom_cap
            if lowered:
                self._oom_cap = cap
        if lowered:
            self.on_event(Note(
                f"packing: trial {lease.trial} ran out of GPU memory with {lease.most_at_once} trials on "
                f"{lease.slot.name}: at most {cap} per slot for the rest of this run", Level.WARNING))


def build_pool(use: Literal["auto", "cpu"] | Sequence[int], num_gpus: int, trials_per_slot: int | Literal["auto"],
               *, max_trials_per_slot: int, memory_margin: float, min_cores_per_trial: int,
               gpu_memory_mib: int | None, on_event: Observer = ignore,
               cpu_cores: int | None = None) -> SlotPool:
    """The run's slots and their packing policy; says once when ``auto`` cannot pack."""
    gpus = query_gpus() if use != "cpu" else []
    slots = plan_slots(use, num_gpus, [g.index for g in gpus])
    gpu_slots = bool(slots[0].devices)
    policy = PackingPolicy(
        trials_per_slot=trials_per_slot, max_trials_per_slot=max_trials_per_slot, memory_margin=memory_margin,
        min_cores_per_trial=min_cores_per_trial, cpu_cores=cpu_cores or os.cpu_count() or 1,
        n_slots=len(slots), gpu_slots=gpu_slots,
        card_mib=card_memory(slots, gpus, gpu_memory_mib) if gpu_slots else None,
    )
    if trials_per_slot == "auto" and gpu_slots and policy.card_mib is None:
        on_event(Note("packing: devices.trials_per_slot is auto but the cards' memory is unknown (nvidia-smi "
                      "did not answer): one trial per slot; set devices.gpu_memory_mib or a number of trials",
                      Level.WARNING))
    return SlotPool(slots, policy, on_event)


def pool_for(cfg: RunConfig, on_event: Observer = ignore) -> SlotPool:
    """The pool a run config asks for (``devices:`` and ``trainer.num_gpus``)."""
    d = cfg.devices
    return build_pool(d.use, cfg.trainer.num_gpus, d.trials_per_slot, max_trials_per_slot=d.max_trials_per_slot,
                      memory_margin=d.memory_margin, min_cores_per_trial=d.min_cores_per_trial,
                      gpu_memory_mib=d.gpu_memory_mib, on_event=on_event)


def describe_packing(pool: SlotPool) -> str:
    """One phrase for the start of a run: how many trials each slot takes."""
    policy = pool.policy
    if policy.trials_per_slot != "auto":
        return f"{policy.trials_per_slot} trial(s) per slot"
    if not policy.gpu_slots:
        return f"{policy.ceiling} trial(s) on the CPU (auto: {policy.min_cores_per_trial} cores each)"
    if policy.ceiling == 1:
        return "1 trial per slot (auto, card memory unknown)"
    return (f"auto: 1 trial per slot until a trial reports its peak memory, then as many as fit "
            f"(at most {policy.ceiling})")
