"""Percentile pruning on each trial's best value so far.

Optuna's ``PercentilePruner`` judges the running trial by its best value so far but
compares it with the other trials' raw value *at that epoch*, so a finished trial that
dipped at epoch k sets a low bar there. Measured DINO/RT-DETR curves dip by 0.1-0.3
between epochs, so both sides are judged by their best value up to the epoch.
Finished trials are COMPLETE ones and, optionally, PRUNED ones that reached the epoch.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def best_so_far(trial: FrozenTrial, step: int, maximize: bool) -> float:
    """Best intermediate value of ``trial`` at steps <= ``step`` (nan if none)."""
    values = [v for s, v in trial.intermediate_values.items() if s <= step and not math.isnan(v)]
    if not values:
        return math.nan
    return max(values) if maximize else min(values)


class BestSoFarPercentilePruner(BasePruner):
    """Prune when the trial's best-so-far is worse than the ``percentile`` of the others'.

    Args:
        percentile: 50 gives the median rule.
        warmup_epochs: no decision before this many epochs have been reported. (Optuna's
            ``n_warmup_steps`` is a step index instead: the first decision comes at step
            ``n_warmup_steps``; epochs are steps from 0, so ``warmup_epochs`` N matches
            ``n_warmup_steps`` N - 1 when every epoch is reported.)
        n_startup_trials: no decision before this many trials have finished.
        n_min_trials: at least this many reference trials must have reached the epoch.
        include_pruned: also compare against pruned trials that reached the epoch.
    """

    def __init__(
        self,
        percentile: float = 50.0,
        warmup_epochs: int = 2,
        n_startup_trials: int = 1,
        n_min_trials: int = 1,
        include_pruned: bool = True,
    ) -> None:
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), got {percentile}")
        self._percentile = percentile
        self._warmup_epochs = warmup_epochs
        self._n_startup_trials = n_startup_trials
        self._n_min_trials = n_min_trials
        self._include_pruned = include_pruned

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or len(trial.intermediate_values) < self._warmup_epochs:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self._n_startup_trials:
            return False
        references = list(completed)
        if self._include_pruned:
            references += study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        maximize = study.direction == StudyDirection.MAXIMIZE
        others = [
            best_so_far(t, step, maximize)
            for t in references
            if t.number != trial.number and t.last_step is not None and t.last_step >= step
        ]
        others = [v for v in others if not math.isnan(v)]
        if len(others) < self._n_min_trials:
            return False
        mine = best_so_far(trial, step, maximize)
        if math.isnan(mine):
            return True
        # for minimisation the "bad" side is above the (100 - p)th percentile
        q = self._percentile if maximize else 100.0 - self._percentile
        bar = float(np.percentile(others, q))
        return mine < bar if maximize else mine > bar
