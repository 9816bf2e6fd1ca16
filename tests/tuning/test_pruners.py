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


# -- not_learning: a trial judged on its own curve ------------------------------------------

def test_not_learning_prunes_a_flat_curve_before_any_trial_has_finished():
    """Trial 0 of the GPU smoke study on main (lr 4e-4): 0.0002, 0.0009, ... for 10 epochs.
    The median rule cannot judge it (no finished trial); not_learning does after the warm-up."""
    study = _study()
    pruner = build_pruner(PrunerSettings(name="not_learning"))
    median = build_pruner(PrunerSettings(name="median", startup_trials=1))
    assert not pruner.prune(study, _running(study, {0: 0.0002}))  # warm-up: 2 validations
    flat = _running(study, {0: 0.0002, 1: 0.0009})
    assert not study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert pruner.prune(study, flat)
    assert not median.prune(study, flat)  # nothing to compare with yet


@pytest.mark.parametrize("curve", [
    {0: 0.0, 1: 0.006, 2: 0.013},  # slow, below the bar after the warm-up, but rising each epoch
    {0: 0.011, 1: 0.076, 2: 0.309},  # trial 5 of the smoke study (lr 5.7e-5), the slowest learner there
    {0: 0.0001, 1: 0.024, 2: 0.076},  # RT-DETR's slowest learner (lr 2e-5), DESIGN.md's lr sweep
])
def test_not_learning_leaves_a_slow_curve_that_rises_alone(curve):
    study = _study()
    pruner = build_pruner(PrunerSettings(name="not_learning"))
    for last in range(1, len(curve)):
        assert not pruner.prune(study, _running(study, {s: curve[s] for s in range(last + 1)})), last


def test_not_learning_prunes_a_curve_that_stops_rising_below_the_bar():
    study = _study()
    pruner = build_pruner(PrunerSettings(name="not_learning", min_value=0.01, min_rise=0.005))
    assert not pruner.prune(study, _running(study, {0: 0.0, 1: 0.006}))
    assert pruner.prune(study, _running(study, {0: 0.0, 1: 0.006, 2: 0.008}))


def test_not_learning_refuses_a_minimised_metric():
    with pytest.raises(ConfigError, match="not_learning.*maximised.*val_loss"):
        build_run_config({"data": {"synth": {}}, "metric": {"name": "val_loss"}, "pruner": {"name": "not_learning"}},
                         use_cpu_variant=False, where="study.yaml")
    with pytest.raises(ConfigError, match=r"rules\[0\].*not_learning"):
        build_run_config({"data": {"synth": {}}, "metric": {"name": "val_loss"},
                          "pruner": {"name": "any", "rules": [{"name": "not_learning"}, {"name": "median"}]}},
                         use_cpu_variant=False, where="study.yaml")
    study = _study("minimize")  # used directly, without a run config: a loud error, not a silent no
    with pytest.raises(RuntimeError, match="maximised metrics only"):
        build_pruner(PrunerSettings(name="not_learning")).prune(study, _running(study, {0: 1.0, 1: 1.0}))


# -- any: several rules ------------------------------------------------------------------

def _any(*rules):
    return build_pruner(PrunerSettings(name="any", rules=list(rules)))


def test_any_prunes_when_one_rule_does_and_says_which():
    study = _study()
    _add(study, {0: 0.2, 1: 0.5})
    pruner = _any({"name": "not_learning"}, {"name": "median", "startup_trials": 1})
    weak = _running(study, {0: 0.1, 1: 0.3})  # learning, but below the median (0.5)
    assert pruner.prune(study, weak)
    assert study._storage.get_trial(weak._trial_id).user_attrs["pruned_by"] == "median"
    flat = _running(study, {0: 0.001, 1: 0.002})
    assert pruner.prune(study, flat)
    assert study._storage.get_trial(flat._trial_id).user_attrs["pruned_by"] == "not_learning, median"
    good = _running(study, {0: 0.3, 1: 0.6})
    assert not pruner.prune(study, good)
    assert "pruned_by" not in study._storage.get_trial(good._trial_id).user_attrs


def test_any_asks_every_rule_even_after_one_fired():
    """Successive halving records each rung in prune(); it must not be skipped."""
    calls = []

    class Recording(optuna.pruners.BasePruner):
        def __init__(self, answer):
            self.answer = answer

        def prune(self, study, trial):
            calls.append(self.answer)
            return self.answer

    from automl.tuning.pruners import AnyPruner

    study = _study()
    assert AnyPruner([("a", Recording(True)), ("b", Recording(False))]).prune(study, _running(study, {0: 0.1}))
    assert calls == [True, False]


@pytest.mark.parametrize("rules, key, message", [
    ([{"name": "not_learning"}, {"name": "median", "patience": 5}], "pruner.rules[1].patience",
     "pruner 'median' has no option 'patience'"),
    ([{"name": "not_learning", "startup_trials": 2}], "pruner.rules[0].startup_trials",
     "pruner 'not_learning' has no option 'startup_trials'"),
    ([{"name": "not_learning", "min_value": -1}], "pruner.rules[0].min_value", "greater than 0"),
    ([{"name": "medain"}], "pruner.rules[0].name", "did you mean 'median'"),
    ([{"warmup_epochs": 2}], "pruner.rules", "rule 0 must be a mapping with a name"),
    ([], "pruner.rules", "at least 1"),
])
def test_any_validates_each_rule_with_its_own_settings(rules, key, message):
    with pytest.raises(ConfigError) as err:
        build_run_config({"data": {"synth": {}}, "pruner": {"name": "any", "rules": rules}},
                         use_cpu_variant=False, where="study.yaml")
    text = str(err.value)
    assert key in text and message in text and "study.yaml" in text, text


def test_any_without_rules_and_nested_rules():
    with pytest.raises(ConfigError, match="pruner.rules: pruner 'any' needs this option"):
        PrunerSettings(name="any")
    nested = _any({"name": "any", "rules": [{"name": "not_learning"}]}, {"name": "threshold", "lower": 0.5})
    study = _study()
    assert nested.prune(study, _running(study, {0: 0.6, 1: 0.4}))  # the threshold rule


def test_the_closing_summary_names_a_composite_pruners_rules_as_configured():
    from automl.config import read_profile
    from automl.study.results import pruner_text

    cfg = build_run_config(read_profile("smoke"), use_cpu_variant=True, where="test")
    assert pruner_text(cfg) == ("any of [not_learning (warmup_epochs=2, min_value=0.01, min_rise=0.005); "
                                "median (warmup_epochs=2, startup_trials=2)]")
    plain = build_run_config({**read_profile("smoke"), "pruner": {"name": "median", "warmup_epochs": 3}},
                             use_cpu_variant=False, where="test")
    assert pruner_text(plain) == "median (warmup_epochs=3)"
