"""Seeded samplers: reproducible for one worker, distinct across workers."""

import optuna
import pytest

from automl.config.run_config import SamplerSettings
from automl.errors import ConfigError
from automl.tuning import build_sampler
from automl.tuning.samplers import PerTrialSeedSampler


def _draw(sampler, n, offset=0):
    study = optuna.create_study(sampler=sampler)
    for _ in range(offset):  # trials another worker took
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(t.suggest_float("x", 1e-5, 1e-1, log=True))
        study.tell(t, out[-1])
    return out


@pytest.mark.parametrize("name", ["random", "tpe", "gp", "cmaes"])
def test_same_seed_same_trial_numbers_reproduce(name):
    options = {} if name == "random" else {"n_startup_trials": 2}  # random has no model to start
    a = _draw(build_sampler(SamplerSettings(name=name, seed=3, **options)), 4)
    b = _draw(build_sampler(SamplerSettings(name=name, seed=3, **options)), 4)
    assert a == b


def test_each_sampler_validates_its_own_settings():
    with pytest.raises(ConfigError, match=r"sampler.n_startup_trials: sampler 'random' has no option 'n_startup_trials'; it accepts seed"):
        SamplerSettings(name="random", n_startup_trials=2)
    with pytest.raises(ConfigError, match="sampler.constant_liar"):
        SamplerSettings(name="gp", constant_liar=True)
    tpe = build_sampler(SamplerSettings(name="tpe", n_ei_candidates=48))
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_ei_candidates == 48


def test_a_user_sampler_by_import_path_is_seeded_per_trial_too():
    sampler = build_sampler(SamplerSettings(name="optuna.samplers:QMCSampler", seed=5, scramble=True))
    assert isinstance(sampler, PerTrialSeedSampler) and isinstance(sampler.base, optuna.samplers.QMCSampler)


def test_two_workers_with_one_seed_draw_different_points():
    """Each worker's trials have different numbers, so their draws differ."""
    worker_a = _draw(build_sampler(SamplerSettings(name="random", seed=0)), 3)
    worker_b = _draw(build_sampler(SamplerSettings(name="random", seed=0)), 3, offset=3)
    assert not set(worker_a) & set(worker_b)
    plain = [_draw(optuna.samplers.RandomSampler(seed=0), 3) for _ in range(2)]
    assert plain[0] == plain[1]  # what an unwrapped seeded sampler does


def test_unseeded_samplers_are_not_wrapped():
    assert not isinstance(build_sampler(SamplerSettings(name="tpe")), PerTrialSeedSampler)
    assert isinstance(build_sampler(SamplerSettings(name="tpe", seed=1)).base, optuna.samplers.TPESampler)
