"""Tuning: which point a trial tries (samplers) and when a trial stops early (pruners).

Both are plugin families (:mod:`automl.plugins`) selected from the run config; the
settings of each algorithm are validated by that algorithm's own model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from automl.tuning.pruners import PRUNERS
from automl.tuning.samplers import SAMPLERS, PerTrialSeedSampler

if TYPE_CHECKING:
    from automl.config.run_config import PrunerSettings, SamplerSettings


def build_sampler(settings: SamplerSettings) -> BaseSampler:
    """The configured sampler; a seeded one is reseeded per trial from (seed, trial number)."""
    sampler = SAMPLERS.build(settings.name, settings.options)
    seed = settings.options.model_dump().get("seed")
    return sampler if seed is None else PerTrialSeedSampler(sampler, seed)


def build_pruner(settings: PrunerSettings) -> BasePruner:
    return PRUNERS.build(settings.name, settings.options)


__all__ = ["PRUNERS", "SAMPLERS", "build_pruner", "build_sampler"]
