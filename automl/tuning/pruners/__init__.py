"""Pruners (Katib's "early stopping"), chosen by name or ``module:attr`` in ``pruner.name``.

``median`` and ``percentile`` are ours (best-so-far on both sides, see
:mod:`._best_so_far`), so are ``not_learning`` (a trial judged on its own curve,
:mod:`._not_learning`) and ``any`` (several rules, any one prunes, :mod:`._any`); the
others are Optuna's. Each has its own settings model
(:mod:`._settings`) and all count their warm-up in ``warmup_epochs``. A user's pruner is
any Optuna ``BasePruner`` class importable as ``package.module:Class``.
"""

from __future__ import annotations

from optuna.pruners import BasePruner

from automl.plugins import PluginFamily
from automl.tuning.pruners._any import AnyPruner
from automl.tuning.pruners._base import PrunerOptions
from automl.tuning.pruners._best_so_far import BestSoFarPercentilePruner, best_so_far
from automl.tuning.pruners._not_learning import NotLearningPruner

_SETTINGS = "automl.tuning.pruners._settings"
PRUNERS: PluginFamily[BasePruner] = PluginFamily(
    "pruner",
    {
        "median": f"{_SETTINGS}:Median",
        "percentile": f"{_SETTINGS}:Percentile",
        "patient": f"{_SETTINGS}:Patient",
        "successive_halving": f"{_SETTINGS}:SuccessiveHalving",
        "hyperband": f"{_SETTINGS}:Hyperband",
        "threshold": f"{_SETTINGS}:Threshold",
        "not_learning": f"{_SETTINGS}:NotLearning",
        "any": f"{_SETTINGS}:AnyOf",
        "none": f"{_SETTINGS}:NoPruning",
    },
    where="pruner.name",
    options_where="pruner",
)

__all__ = ["PRUNERS", "AnyPruner", "BestSoFarPercentilePruner", "NotLearningPruner", "PrunerOptions", "best_so_far"]
