"""How many trials share one device slot: a fixed number, or ``auto`` from measured memory.

``auto`` starts at one trial per slot. Once a trial's job reports its peak GPU memory
(the trainer's ``peak_gpu_memory_mib`` status field: ``torch.cuda.max_memory_reserved``,
what the process holds of the card), as many trials share a slot as fit in the card's
memory less a safety margin, each counted at the largest peak seen so far plus a CUDA
context, capped by ``max_trials_per_slot`` and by the CPU cores (``min_cores_per_trial``
each). An out-of-memory failure beside neighbours lowers the count for the rest of the run.
On CPU slots ``auto`` means as many trials as the core rule allows.

Everything here is arithmetic on typed inputs; the pool (:mod:`automl.study.slots`)
applies it, and the report (:func:`slot_usage`) reads back how trials were packed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Literal, Sequence

from optuna.trial import FrozenTrial, TrialState

from automl.study import attrs

# What a CUDA process holds beyond the caching allocator's reserve (context, cuBLAS and
# cuDNN handles, NCCL): about 0.5-0.8 GiB with torch 2.x on H100/H200; counted generously.
CUDA_CONTEXT_MIB = 1024


@dataclasses.dataclass(frozen=True)
class PackingPolicy:
    """The packing settings of one run (from ``devices:`` in the run config).

    ``trials_per_slot``: a fixed count, or ``"auto"``. ``card_mib``: the memory of the
    smallest card of a slot (None: unknown, so ``auto`` cannot pack GPUs).
    """

    trials_per_slot: int | Literal["auto"]
    max_trials_per_slot: int
    memory_margin: float  # fraction of the card left free by ``auto``
    min_cores_per_trial: int
    cpu_cores: int
    n_slots: int
    gpu_slots: bool  # False: CPU slots (no devices)
    card_mib: int | None = None

    @property
    def core_cap(self) -> int:
        """Trials per slot the CPU cores allow (at least one)."""
        return max(1, self.cpu_cores // self.min_cores_per_trial // max(1, self.n_slots))

    @property
    def ceiling(self) -> int:
        """The most trials one slot may ever hold in this run: the thread count to start."""
        if self.trials_per_slot != "auto":
            return self.trials_per_slot
        if self.gpu_slots and self.card_mib is None:
            return 1
        return max(1, min(self.max_trials_per_slot, self.core_cap))

    def trials_for(self, peak_mib: int | None) -> int:
        """Trials per slot given the largest peak memory (MiB) a trial reported so far."""
        if self.trials_per_slot != "auto":
            return self.trials_per_slot
        if not self.gpu_slots:
            return self.ceiling
        if peak_mib is None or self.card_mib is None:
            return 1
        return max(1, min(self.ceiling, fitting_trials(self.card_mib, peak_mib, self.memory_margin)))


def fitting_trials(card_mib: int, peak_mib: int, margin: float) -> int:
    """How many processes of ``peak_mib`` (plus a CUDA context each) fit in a card of
    ``card_mib`` when ``margin`` of it stays free. Never below 1: a single trial always runs."""
    usable = card_mib * (1.0 - margin)
    return max(1, math.floor(usable / (peak_mib + CUDA_CONTEXT_MIB)))


# ------------------------------------------------------------------ what happened


@dataclasses.dataclass(frozen=True)
class SlotUsage:
    """How one slot (of one host) was shared over a study."""

    slot: str  # "cuda:0", "cuda:0,cuda:1", "cpu"; prefixed by the host when several ran
    trials: tuple[int, ...]
    max_at_once: int
    mean_at_once: float  # time-weighted over the time the slot had at least one job
    busy_s: float  # seconds with at least one job on the slot

    def describe(self) -> str:
        return (f"{self.slot}: {len(self.trials)} trial(s), up to {self.max_at_once} at once "
                f"(mean {self.mean_at_once:.1f} while busy, {self.busy_s:.0f} s busy)")


def _when(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def slot_usage(trials: Sequence[FrozenTrial]) -> list[SlotUsage]:
    """Per slot, from the trials' ``slot``, ``job_started_at`` and ``job_ended_at``
    attributes: how many trials ran there and how many at once. Trials without those
    attributes (older runs, jobs that never started) are left out, and so are copies
    queued for a retry, which carry their predecessor's."""
    spans: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    seen: set[tuple[object, ...]] = set()
    for t in trials:
        # a retry copy inherits its predecessor's attributes: the same job, counted once
        job = (t.user_attrs.get(attrs.JOB_ID), t.user_attrs.get(attrs.JOB_STARTED_AT))
        if t.state == TrialState.WAITING or job in seen:
            continue
        seen.add(job)
        slot = t.user_attrs.get(attrs.SLOT)
        start = _when(t.user_attrs.get(attrs.JOB_STARTED_AT))
        end = _when(t.user_attrs.get(attrs.JOB_ENDED_AT))
        if not isinstance(slot, str) or start is None or end is None:
            continue
        host = str(t.user_attrs.get(attrs.WORKER) or "").split(":")[0]
        spans.setdefault((host, slot), []).append((t.number, start, max(start, end)))
    several_hosts = len({host for host, _ in spans}) > 1
    out = []
    for (host, slot), items in sorted(spans.items()):
        edges = sorted([(s, 1) for _, s, _ in items] + [(e, -1) for _, _, e in items], key=lambda x: (x[0], x[1]))
        running, peak, busy, weighted, last = 0, 0, 0.0, 0.0, edges[0][0]
        for when, change in edges:
            if running:
                busy += when - last
                weighted += running * (when - last)
            running += change
            peak = max(peak, running)
            last = when
        out.append(SlotUsage(
            slot=f"{host}/{slot}" if several_hosts else slot,
            trials=tuple(sorted(n for n, _, _ in items)),
            max_at_once=peak,
            mean_at_once=weighted / busy if busy > 0 else float(peak),
            busy_s=busy,
        ))
    return out
