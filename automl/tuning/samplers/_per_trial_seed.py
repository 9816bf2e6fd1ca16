"""A seeded sampler reseeded per trial from ``(seed, trial number)``.

One worker stays reproducible, and several workers started with the same config (same
seed) no longer draw identical points, since trial numbers are unique across the study.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from automl.optuna_private import numpy_random_state


def _random_states(obj: Any, depth: int = 0) -> list[np.random.RandomState]:
    """The numpy RandomStates inside a sampler and its nested samplers."""
    found: list[np.random.RandomState] = []
    for value in vars(obj).values():
        if (rng := numpy_random_state(value)) is not None:
            found.append(rng)
        elif isinstance(value, BaseSampler) and depth < 3:
            found += _random_states(value, depth + 1)
    return found


class PerTrialSeedSampler(BaseSampler):
    """Wraps a sampler; before each trial its random states are seeded from
    ``(seed, trial.number)``."""

    def __init__(self, base: BaseSampler, seed: int) -> None:
        self._base = base
        self._seed = seed

    @property
    def base(self) -> BaseSampler:
        return self._base

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        digest = hashlib.sha256(f"{self._seed}:{trial.number}".encode()).digest()
        trial_seed = int.from_bytes(digest[:4], "little")
        for rng in _random_states(self._base):
            rng.seed(trial_seed)
        self._base.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
