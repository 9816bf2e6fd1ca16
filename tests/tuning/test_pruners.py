"""The default pruner judges trials by their best value so far, after a warm-up."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from automl.config import build_run_config
from automl.config.run_config import PrunerSettings
from automl.errors import ConfigError
from automl.tuning import build_pruner
from automl.tuning.pruners import BestSoFarPercentilePruner, best_so_far


def _study(direction="maximize"):
    return optuna.create_study(direction=direction, pruner=optuna.pruners.NopPruner())


def _add(study, curve, state=TrialState.COMPLETE):
    value = max(curve.values()) if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, value=value, intermediate_values=curve,
                                 params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)}))


def _running(study, curve):
    trial = study.ask()
    for step, value in curve.items():
        trial.report(value, step)
    return study._storage.get_trial(trial._trial_id)


def test_best_so_far_ignores_later_steps():
    study = _study()
    _add(study, {1: 0.2, 2: 0.6, 3: 0.3})
    t = study.trials[0]
    assert best_so_far(t, 1, True) == 0.2
    assert best_so_far(t, 3, True) == 0.6
    assert best_so_far(t, 3, False) == 0.2


def test_no_decision_during_warmup():
    study = _study()
    _add(study, {1: 0.9, 2: 0.9, 3: 0.9})
    pruner = BestSoFarPercentilePruner(warmup_epochs=2)
    assert not pruner.prune(study, _running(study, {1: 0.0}))
    assert pruner.prune(study, _running(study, {1: 0.0, 2: 0.1}))


def test_a_dip_does_not_prune_a_trial_whose_best_is_good():
    """Optuna's rule compares the others' raw value at the step; a reference trial
    that dipped would set a low bar, one that peaked a high one. Ours uses best so far."""
    study = _study()
    _add(study, {1: 0.3, 2: 0.7, 3: 0.4})  # reference dips at epoch 3
    pruner = BestSoFarPercentilePruner(warmup_epochs=2)
    # running trial peaked at 0.8 at epoch 2, dips to 0.5 at epoch 3: its best (0.8) > 0.7
    assert not pruner.prune(study, _running(study, {1: 0.1, 2: 0.8, 3: 0.5}))
    # best so far 0.6 < reference best so far 0.7: pruned, although 0.6 > the raw 0.4 at epoch 3
    assert pruner.prune(study, _running(study, {1: 0.1, 2: 0.6, 3: 0.6}))
    optuna_rule = optuna.pruners.MedianPruner(n_warmup_steps=2)
    assert not optuna_rule.prune(study, _running(study, {1: 0.1, 2: 0.6, 3: 0.6}))


def test_minimize_direction():
    study = _study("minimize")
    _add(study, {1: 1.0, 2: 0.5})
    study.trials  # noqa: B018
    pruner = BestSoFarPercentilePruner(warmup_epochs=1)
    assert pruner.prune(study, _running(study, {1: 2.0, 2: 0.9}))
    assert not pruner.prune(study, _running(study, {1: 2.0, 2: 0.4}))


def test_pruned_trials_count_as_references_only_where_they_reached():
    study = _study()
    _add(study, {1: 0.1, 2: 0.2, 3: 0.3})
    _add(study, {1: 0.9, 2: 0.9}, state=TrialState.PRUNED)
    pruner = BestSoFarPercentilePruner(warmup_epochs=1)
    # at epoch 2 the references are 0.2 and 0.9: median 0.55
    assert pruner.prune(study, _running(study, {1: 0.3, 2: 0.5}))
    # at epoch 3 only the complete trial reached it: bar 0.3
    assert not pruner.prune(study, _running(study, {1: 0.3, 2: 0.5, 3: 0.5}))


def test_threshold_needs_a_bound():
    with pytest.raises(ConfigError, match="lower or pruner.upper"):
        PrunerSettings(name="threshold")
    assert build_pruner(PrunerSettings(name="threshold", lower=0.1))


@pytest.mark.parametrize("raw, key, accepted", [
    ({"name": "median", "patience": 5}, "pruner.patience", "warmup_epochs"),
    ({"name": "hyperband", "percentile": 25}, "pruner.percentile", "reduction_factor"),
    ({"name": "none", "warmup_epochs": 2}, "pruner.warmup_epochs", "no options"),
    ({"name": "threshold", "lower": 0.1, "startup_trials": 2}, "pruner.startup_trials", "lower"),
])
def test_each_pruner_validates_its_own_settings(raw, key, accepted):
    """Katib-style: an option the chosen algorithm does not take is an error naming it."""
    with pytest.raises(ConfigError) as err:
        build_run_config({"data": {"synth": {}}, "pruner": raw}, use_cpu_variant=False, where="study.yaml")
    text = str(err.value)
    assert key in text and "study.yaml" in text and f"pruner {raw['name']!r} has no option" in text
    assert "it accepts " in text and accepted in text.split("it accepts ")[1]


def test_settings_are_typed_per_pruner():
    with pytest.raises(ConfigError, match="pruner.warmup_epochs"):
        PrunerSettings(name="median", warmup_epochs="two")
    assert PrunerSettings(name="patient", patience=5).options.patience == 5


def test_a_user_pruner_by_import_path_with_its_options():
    settings = PrunerSettings(name="optuna.pruners:PercentilePruner", percentile=25.0, n_warmup_steps=3)
    pruner = build_pruner(settings)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    with pytest.raises(ConfigError, match="pruner.percentil: pruner 'optuna.pruners:PercentilePruner' has no option"):
        PrunerSettings(name="optuna.pruners:PercentilePruner", percentil=25.0)


def test_threshold_warmup_counts_epochs_like_the_median_rule():
    """warmup_epochs=2: the first decision comes with the second epoch (step 1)."""
    study = _study()
    pruner = build_pruner(PrunerSettings(name="threshold", lower=0.5, warmup_epochs=2))
    assert not pruner.prune(study, _running(study, {0: 0.1}))
    assert pruner.prune(study, _running(study, {0: 0.1, 1: 0.1}))
