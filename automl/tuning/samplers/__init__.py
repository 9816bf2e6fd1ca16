"""Samplers (Katib's "suggestion"), chosen by name or ``module:attr`` in ``sampler.name``.

Built in: ``tpe``, ``gp``, ``random``, ``cmaes`` (Optuna's, one settings model each in
:mod:`._optuna`). A user's sampler is any Optuna ``BaseSampler`` class importable as
``package.module:Class``; its options are its constructor's parameters. A seeded sampler
is reseeded per trial (:mod:`._per_trial_seed`).
"""

from __future__ import annotations

from optuna.samplers import BaseSampler

from automl.plugins import PluginFamily
from automl.tuning.samplers._per_trial_seed import PerTrialSeedSampler

SAMPLERS: PluginFamily[BaseSampler] = PluginFamily(
    "sampler",
    {
        "tpe": "automl.tuning.samplers._optuna:Tpe",
        "gp": "automl.tuning.samplers._optuna:Gp",
        "random": "automl.tuning.samplers._optuna:Random",
        "cmaes": "automl.tuning.samplers._optuna:CmaEs",
    },
    where="sampler.name",
    options_where="sampler",
)

__all__ = ["SAMPLERS", "PerTrialSeedSampler"]
