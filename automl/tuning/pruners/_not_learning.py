"""A trial that is not learning, judged on its own curve: no reference trials needed.

The median rule waits for finished trials; a trial whose mAP stays at noise level from
the start wastes its whole budget before anyone can judge it (one trial of the GPU
smoke study ran 10 epochs, 222 s, below 0.009). This rule needs nothing but the trial:
after ``warmup_epochs`` validations, a trial whose best value so far is still below
``min_value`` is pruned, unless its latest epoch climbed by at least ``min_rise`` over
the best before it (a slow curve that rises is left alone; it either reaches
``min_value`` within a few epochs or stops rising and is pruned then).

It is for metrics that are maximised and start at zero (mAP, recall); a loss has no
"near zero" to compare with, so the run config refuses it for minimised metrics.
"""

from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial


class NotLearningPruner(BasePruner):
    """Prune when, after the warm-up, the best value so far is within noise of zero and
    the curve is not rising.

    Args:
        warmup_epochs: validations reported before the first decision.
        min_value: a best value so far below this counts as "not learning yet".
        min_rise: an epoch that improves on the best before it by at least this much
            spares the trial for that epoch.
    """

    def __init__(self, warmup_epochs: int = 2, min_value: float = 0.01, min_rise: float = 0.005) -> None:
        if min_value <= 0:
            raise ValueError(f"min_value must be above 0, got {min_value}")
        if min_rise < 0:
            raise ValueError(f"min_rise must be at least 0, got {min_rise}")
        self._warmup_epochs = warmup_epochs
        self._min_value = min_value
        self._min_rise = min_rise

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        if study.direction != StudyDirection.MAXIMIZE:
            raise RuntimeError("the not_learning pruner judges maximised metrics only (a loss has no zero to "
                               "compare with); use median or threshold with upper= for this study")
        values = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        values = [v for v in values if not math.isnan(v)]
        if len(values) < max(1, self._warmup_epochs):
            return False
        best = max(values)
        if best >= self._min_value:
            return False
        *before, last = values
        rising = bool(before) and last - max(before) >= self._min_rise
        return not rising
