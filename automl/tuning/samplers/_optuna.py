"""Optuna's samplers, one settings model each: what the run config may say about them.

TPE runs with the constant liar so parallel workers, threads or hosts, do not propose the
same point while trials are still running, and with ``group`` so that conditional
parameters (``depends_on``) are modelled jointly.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers import BaseSampler
from pydantic import Field

from automl.plugins import PluginSettings


class SamplerOptions(PluginSettings):
    """Every sampler takes a seed (reseeded per trial, see ``_per_trial_seed``)."""

    seed: int | None = None

    def build(self, **context: Any) -> BaseSampler:  # pragma: no cover - abstract
        raise NotImplementedError


class _ModelBased(SamplerOptions):
    n_startup_trials: int | None = Field(None, ge=0)  # random trials before the model; None: Optuna's

    def _startup(self) -> dict[str, Any]:
        return {} if self.n_startup_trials is None else {"n_startup_trials": self.n_startup_trials}


class Tpe(_ModelBased):
    """``tpe``: Optuna's TPESampler, multivariate and grouped, with the constant liar."""

    constant_liar: bool = True
    multivariate: bool = True
    group: bool = True
    n_ei_candidates: int = Field(24, ge=1)

    def build(self, **context: Any) -> BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed, constant_liar=self.constant_liar, multivariate=self.multivariate,
            group=self.group, n_ei_candidates=self.n_ei_candidates, **self._startup(),
        )  # fmt: skip


class Gp(_ModelBased):
    """``gp``: Optuna's Gaussian-process sampler (sequential Bayesian optimisation)."""

    deterministic_objective: bool = False

    def build(self, **context: Any) -> BaseSampler:
        return optuna.samplers.GPSampler(
            seed=self.seed, deterministic_objective=self.deterministic_objective, **self._startup()
        )


class Random(SamplerOptions):
    """``random``: independent uniform draws (log-uniform on log-scaled parameters)."""

    def build(self, **context: Any) -> BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class CmaEs(_ModelBased):
    """``cmaes``: Optuna's CMA-ES sampler."""

    sigma0: float | None = Field(None, gt=0)
    popsize: int | None = Field(None, ge=1)
    consider_pruned_trials: bool = False

    def build(self, **context: Any) -> BaseSampler:
        return optuna.samplers.CmaEsSampler(
            seed=self.seed, sigma0=self.sigma0, popsize=self.popsize,
            consider_pruned_trials=self.consider_pruned_trials, **self._startup(),
        )  # fmt: skip
