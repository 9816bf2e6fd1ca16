"""Every use of Optuna's private API, in one place, so an Optuna upgrade touches this file.

Optuna (5.0) has no public way to reach a study's storage, a trial's storage id, the
metadata type of an artifact or the lazily created random state of its samplers; the
orchestrator needs all four (recovery marks trials of dead workers failed, the
objective reads what a retried trial inherited, artifacts are addressed by trial id,
seeded samplers are reseeded per trial). Two more lean on how ``Study.optimize`` works
inside: it creates every trial through ``Study.ask`` and checks a stop flag before each
new one (:class:`GatedStudy`, :func:`request_stop`). Nothing else in ``automl`` touches a
name that starts with ``_`` in Optuna.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

import numpy as np
import optuna
from optuna.artifacts._upload import ArtifactMeta
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial

__all__ = ["ArtifactMeta", "GatedStudy", "frozen_trial", "numpy_random_state", "request_stop", "storage_of",
           "trial_id"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage behind ``study``."""
    return study._storage


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its ``number``), which storage calls take."""
    return trial._trial_id


def frozen_trial(trial: Trial) -> FrozenTrial:
    """A fresh snapshot of a running trial as the storage holds it (what a retried trial
    inherited, reported values included)."""
    return trial.study._storage.get_trial(trial._trial_id)


def numpy_random_state(value: Any) -> np.random.RandomState | None:
    """The numpy RandomState a sampler attribute holds, plain or behind Optuna's lazy wrapper."""
    if isinstance(value, np.random.RandomState):
        return value
    if isinstance(value, LazyRandomState):
        return value.rng
    return None


Gate = Callable[[optuna.Study], ContextManager[None]]


class GatedStudy(optuna.Study):
    """A study whose every new trial is created inside ``gate(study)``: ``optimize``
    starts each trial with ``self.ask()``, so a gate that raises stops this worker before
    a trial exists (the exact budget of :mod:`automl.study.budget`)."""

    def __init__(self, study: optuna.Study, gate: Gate) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=study.sampler,
                         pruner=study.pruner)
        self._automl_gate = gate

    def ask(self, fixed_distributions: Any = None) -> Trial:
        with self._automl_gate(self):
            return super().ask(fixed_distributions)


def request_stop(study: optuna.Study) -> None:
    """Let ``optimize`` start no new trial, from any thread (``Study.stop`` works only in
    the thread running the objective; a signal handler runs in the main thread)."""
    study._stop_flag = True
