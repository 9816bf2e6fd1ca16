"""Samplers chosen by name. TPE runs with the constant liar so parallel workers,
threads or hosts, do not propose the same point while trials are still running."""

from __future__ import annotations

import optuna
from optuna.samplers import BaseSampler

from automl.config.run_config import SamplerSettings


def build_sampler(settings: SamplerSettings) -> BaseSampler:
    s, opts = settings, dict(settings.options)
    if s.n_startup_trials is not None and s.name in ("tpe", "gp", "cmaes"):
        opts.setdefault("n_startup_trials", s.n_startup_trials)
    if s.name == "tpe":
        opts.setdefault("constant_liar", True)
        opts.setdefault("multivariate", True)
        opts.setdefault("group", True)  # conditional parameters (depends_on) stay joint
        return optuna.samplers.TPESampler(seed=s.seed, **opts)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, **opts)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed, **opts)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, **opts)
    raise ValueError(f"unknown sampler {s.name!r}")
