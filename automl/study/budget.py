"""``budget.n_trials`` as an exact budget of the study, whoever runs its trials.

Each worker used to count finished trials and start more while below the budget, so two
workers that both saw 3 of 4 started one each (5 trials for ``n_trials: 4``). Here a
trial starts only through :meth:`TrialBudget.gate`: under a lock of the study's storage
(:mod:`automl.study.storage_lock`) it counts the trials that hold a share of the budget
and lets Optuna create (or pop) the trial only while one is left; the new RUNNING trial
is in the storage before the lock is released, so the next worker counts it.

A share is held by every trial that started and was not superseded by its retry
(RUNNING, COMPLETE, PRUNED, FAIL), and by a queued retry (WAITING with ``failed_trial``):
an interrupted trial's slot is kept for its retry, so another worker cannot spend it
first. A retry at the head of the queue may therefore always start.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.optuna_private import request_stop
from automl.study import attrs
from automl.study.storage_lock import StorageLock

_STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class BudgetSpent(Exception):
    """No share of ``n_trials`` is left: this worker starts no further trial."""


def is_retry(trial: FrozenTrial) -> bool:
    return "failed_trial" in trial.system_attrs


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that hold no share: those a retry replaces, and those seeded from
    an earlier night's study as sampler history (they never ran here)."""
    return ({n for t in trials for n in t.system_attrs.get("retry_history", [])}
            | {t.number for t in trials if attrs.SEEDED_FROM in t.user_attrs})


def shares_held(trials: list[FrozenTrial]) -> int:
    """Trials holding a share of the budget (see the module docstring)."""
    replaced = superseded(trials)
    return sum(
        1 for t in trials
        if t.number not in replaced and (t.state in _STARTED or (t.state == TrialState.WAITING and is_retry(t)))
    )  # fmt: skip


def finished_shares(trials: list[FrozenTrial]) -> int:
    """Trials that used their share: finished and not superseded by a retry."""
    replaced = superseded(trials)
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in trials if t.number not in replaced and t.state in done)


def may_start(trials: list[FrozenTrial], n_trials: int) -> bool:
    """Whether the next ``ask`` may start a trial: the queue's head is a retry (its share
    is held already), or a share is left."""
    waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
    if waiting and is_retry(waiting[0]):
        return True
    return shares_held(trials) < n_trials


class TrialBudget:
    """The gate every ``ask`` of one study passes (through
    :class:`automl.optuna_private.GatedStudy`)."""

    def __init__(self, n_trials: int | None, lock: StorageLock) -> None:
        self.n_trials = n_trials
        self.lock = lock

    @contextlib.contextmanager
    def gate(self, study: optuna.Study) -> Iterator[None]:
        """Hold the study's lock while a trial is created; BudgetSpent when none may be."""
        if self.n_trials is None:
            yield
            return
        with self.lock.hold():
            trials = study.get_trials(deepcopy=False)
            if not may_start(trials, self.n_trials):
                request_stop(study)  # other threads of this worker start none either
                raise BudgetSpent(f"the study holds its {self.n_trials} trial(s) (budget.n_trials)")
            yield
