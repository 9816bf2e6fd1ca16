"""Pruners chosen by name from the run config.

``median`` and ``percentile`` are ours (best-so-far on both sides, see
:mod:`automl.pruners._best_so_far`); the others are Optuna's, wrapped so that every
pruner honours ``warmup_epochs``.
"""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner

from automl.config.run_config import PrunerSettings
from automl.pruners._best_so_far import BestSoFarPercentilePruner, best_so_far

__all__ = ["BestSoFarPercentilePruner", "best_so_far", "build_pruner"]


def build_pruner(settings: PrunerSettings) -> BasePruner:
    s = settings
    # steps are 0-based epochs: a warm-up of 2 epochs allows the first decision at step 1
    warmup_steps = max(0, s.warmup_epochs - 1)
    if s.name in ("median", "percentile"):
        return BestSoFarPercentilePruner(
            percentile=50.0 if s.name == "median" else s.percentile,
            n_warmup_steps=s.warmup_epochs,
            n_startup_trials=s.startup_trials,
            **s.options,
        )
    if s.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, s.warmup_epochs), reduction_factor=s.reduction_factor, **s.options
        )
    if s.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, s.warmup_epochs), reduction_factor=s.reduction_factor, **s.options
        )
    if s.name == "patient":
        inner = BestSoFarPercentilePruner(n_warmup_steps=s.warmup_epochs, n_startup_trials=s.startup_trials)
        return optuna.pruners.PatientPruner(inner, patience=s.patience, min_delta=s.min_delta)
    if s.name == "threshold":
        if s.lower is None and s.upper is None:
            raise ValueError("pruner 'threshold' needs pruner.lower or pruner.upper")
        return optuna.pruners.ThresholdPruner(
            lower=s.lower, upper=s.upper, n_warmup_steps=warmup_steps, **s.options
        )
    if s.name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {s.name!r}")
