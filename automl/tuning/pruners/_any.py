"""A pruner made of several rules: a trial is pruned when any one of them says so.

Every rule is asked at every report, also after one has said "prune": some keep their
own bookkeeping in ``prune()`` (successive halving records the rungs a trial passed),
which must not depend on the order of the rules. The names of the rules that fired
are written to the trial's ``pruned_by`` user attribute, so the report can say why.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from automl.optuna_private import storage_of, trial_id
from automl.study.attrs import PRUNED_BY


class AnyPruner(BasePruner):
    """``rules``: (name, pruner) pairs; prune when any pruner prunes."""

    def __init__(self, rules: Sequence[tuple[str, BasePruner]]) -> None:
        if not rules:
            raise ValueError("an 'any' pruner needs at least one rule")
        self.rules = tuple(rules)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        fired = [name for name, rule in self.rules if rule.prune(study, trial)]
        if fired:
            storage_of(study).set_trial_user_attr(trial_id(trial), PRUNED_BY, ", ".join(fired))
        return bool(fired)
