"""What a running study reports, as typed events; :mod:`automl.ui` renders them.

The study calls one observer (``Callable[[Event], None]``) from its main thread and from
the objective's worker threads, so an observer must be thread-safe.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Callable

from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from pathlib import Path

    from automl.datasets.findings import Finding
    from automl.study.digest import StudyDigest
    from automl.study.showcase import Showcase


class Level(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class Note:
    """A line for the person running the study."""

    text: str
    level: Level = Level.INFO


@dataclasses.dataclass(frozen=True)
class Findings:
    """Preflight's findings on the data and the spec, before any trial."""

    findings: tuple[Finding, ...]
    title: str = "Preflight"


@dataclasses.dataclass(frozen=True)
class StudyStarted:
    study_name: str
    remaining: int | None  # trials this run may still finish; None: no limit
    slots: tuple[tuple[int, ...], ...]  # GPU indices per slot; () is a CPU slot
    best: tuple[int, float] | None  # (trial number, value) already in the study
    packing: str = ""  # how many trials share a slot, e.g. "up to 4 per slot (auto)"


@dataclasses.dataclass(frozen=True)
class TrialEvent:
    """One step of one trial, from the objective."""

    kind: str  # started | epoch | pruned | completed | failed | interrupted | retry_alone
    trial: int
    slot: tuple[int, ...] = ()
    epoch: int | None = None
    value: float | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class TrialFinished:
    """Optuna recorded a trial's final state (whoever ran it)."""

    number: int
    state: TrialState
    value: float | None


@dataclasses.dataclass(frozen=True)
class StudyStopped:
    """No trial of this run is running any more."""


@dataclasses.dataclass(frozen=True)
class TrialsSummary:
    """Every trial of the study at the end of a run, for the closing table."""

    study_name: str
    metric: str
    trials: tuple[FrozenTrial, ...]
    best: int | None


@dataclasses.dataclass(frozen=True)
class StudyClosed:
    """The end of a run: what the trials say (who learned, who was pruned where, the best)
    and where the results are; the closing lines of the terminal."""

    digest: StudyDigest
    elapsed_s: float
    interrupted: bool = False
    pruner: str = ""  # the pruning rule as configured, e.g. "median (warmup_epochs=2)"
    best_spec: Path | None = None
    best_checkpoint: Path | None = None
    exported_model: Path | None = None
    report: Path | None = None
    showcase: Showcase | None = None


Event = Note | Findings | StudyStarted | TrialEvent | TrialFinished | StudyStopped | TrialsSummary | StudyClosed
Observer = Callable[[Event], None]


def ignore(event: Event) -> None:
    """An observer that shows nothing (library use, tests)."""
