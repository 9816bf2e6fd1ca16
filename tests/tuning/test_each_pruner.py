"""Each named pruner, alone: the class its settings build, its warm-up (no decision
before it) and its decisions on trials that are clearly weak or clearly good."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from automl.config.run_config import PrunerSettings
from automl.tuning import build_pruner
from automl.tuning.pruners import BestSoFarPercentilePruner


def _study(direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=optuna.pruners.NopPruner())


def _complete(study: optuna.Study, curve: dict[int, float]) -> None:
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=max(curve.values()), intermediate_values=curve,
                                 params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}))


def _running(study: optuna.Study, curve: dict[int, float]) -> FrozenTrial:
    trial = study.ask()
    for step, value in curve.items():
        trial.report(value, step)
    return study._storage.get_trial(trial._trial_id)


def _first_pruned_step(pruner, study: optuna.Study, values: list[float]) -> int | None:
    """Report ``values`` epoch by epoch; the first step at which the pruner says stop."""
    trial = study.ask()
    for step, value in enumerate(values):
        trial.report(value, step)
        if pruner.prune(study, study._storage.get_trial(trial._trial_id)):
            return step
    return None


def _references(study: optuna.Study, n: int = 3, epochs: int = 6) -> None:
    for k in range(n):  # curves rising to 0.6, 0.7, 0.8
        _complete(study, {e: (0.6 + 0.1 * k) * (e + 1) / epochs for e in range(epochs)})


def test_median():
    pruner = build_pruner(PrunerSettings(name="median", warmup_epochs=2))
    assert type(pruner) is BestSoFarPercentilePruner and pruner._percentile == 50.0
    study = _study()
    _references(study)
    assert _first_pruned_step(pruner, study, [0.0] * 6) == 1  # the 2nd epoch: after the warm-up
    assert _first_pruned_step(pruner, study, [0.2 * (e + 1) for e in range(6)]) is None  # above the median


def test_median_waits_for_its_startup_trials():
    pruner = build_pruner(PrunerSettings(name="median", warmup_epochs=1, startup_trials=2))
    study = _study()
    _references(study, n=1)
    assert _first_pruned_step(pruner, study, [0.0] * 6) is None
    _references(study, n=1)
    assert _first_pruned_step(pruner, study, [0.0] * 6) == 0


def test_percentile():
    """25: only the bottom quarter is stopped; a trial between the 25th and 50th percentile
    survives, where the median rule stops it."""
    pruner = build_pruner(PrunerSettings(name="percentile", percentile=25, warmup_epochs=2))
    assert type(pruner) is BestSoFarPercentilePruner and pruner._percentile == 25.0
    study = _study()
    for top in (0.2, 0.4, 0.6, 0.8):
        _complete(study, {0: top / 2, 1: top, 2: top})
    between = [0.2, 0.45, 0.45]  # best 0.45: above the 25th percentile (0.35), below the median (0.5)
    assert _first_pruned_step(pruner, study, between) is None
    assert _first_pruned_step(build_pruner(PrunerSettings(name="median", warmup_epochs=2)), study, between) == 1
    assert _first_pruned_step(pruner, study, [0.0, 0.1, 0.1]) == 1


def test_patient():
    """A weak trial is judged by the median rule only once its best of the last
    ``patience`` + 1 epochs fell below its best before them (Optuna's PatientPruner: a
    plateau is not a decline); one that keeps improving is never judged."""
    pruner = build_pruner(PrunerSettings(name="patient", patience=2, warmup_epochs=1))
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, BestSoFarPercentilePruner) and pruner._patience == 2
    study = _study()
    _references(study)
    improving = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]  # far below the others, but never stalling
    assert _first_pruned_step(pruner, study, improving) is None
    assert _first_pruned_step(pruner, study, [0.05] * 6) is None  # a plateau
    declining = [0.05, 0.05, 0.04, 0.04, 0.03, 0.03]
    assert _first_pruned_step(pruner, study, declining) == 4  # steps 2-4 all below the best of steps 0-1
    assert _first_pruned_step(build_pruner(PrunerSettings(name="median", warmup_epochs=1)), study, improving) == 0


def test_successive_halving():
    """ASHA: the first rung at step ``warmup_epochs``; there a trial outside the top
    1/reduction_factor of the trials that reached it is stopped."""
    pruner = build_pruner(PrunerSettings(name="successive_halving", warmup_epochs=2, reduction_factor=3))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 2 and pruner._reduction_factor == 3
    study = _study()
    for value in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        trial = study.ask()
        for step in range(3):  # each passes rung 0 (step 2) through the pruner, as a study does
            trial.report(value, step)
            pruner.prune(study, study._storage.get_trial(trial._trial_id))
        study.tell(trial, value)
    assert _first_pruned_step(pruner, study, [0.1, 0.1, 0.1, 0.1]) == 2  # no decision at steps 0 and 1
    assert _first_pruned_step(pruner, study, [0.99] * 4) is None


def test_hyperband():
    pruner = build_pruner(PrunerSettings(name="hyperband", warmup_epochs=1, reduction_factor=3, max_resource=9))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._min_resource == 1 and pruner._max_resource == 9 and pruner._reduction_factor == 3
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for k in range(30):  # finished trials in every bracket, each passing its rungs
        trial = study.ask()
        value = 0.5 + 0.01 * k
        for step in range(10):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    weak = _first_pruned_step(pruner, study, [0.01] * 10)
    assert weak is not None and weak >= 1  # stopped, and never before the first rung
    assert _first_pruned_step(pruner, study, [0.99] * 10) is None


def test_threshold():
    pruner = build_pruner(PrunerSettings(name="threshold", lower=0.3, warmup_epochs=2))
    assert isinstance(pruner, optuna.pruners.ThresholdPruner)
    study = _study()
    assert _first_pruned_step(pruner, study, [0.1, 0.1, 0.1]) == 1
    assert _first_pruned_step(pruner, study, [0.1, 0.4, 0.5]) is None
    upper = build_pruner(PrunerSettings(name="threshold", upper=5.0, warmup_epochs=1))
    loss = _study("minimize")
    assert _first_pruned_step(upper, loss, [9.0, 3.0]) == 0 and _first_pruned_step(upper, loss, [4.0, 3.0]) is None


def test_none():
    pruner = build_pruner(PrunerSettings(name="none"))
    assert isinstance(pruner, optuna.pruners.NopPruner)
    study = _study()
    _references(study)
    assert _first_pruned_step(pruner, study, [0.0] * 6) is None


@pytest.mark.parametrize("name", ["median", "percentile", "patient"])
def test_the_best_so_far_rules_judge_minimised_metrics_too(name):
    pruner = build_pruner(PrunerSettings(name=name, warmup_epochs=1))
    study = _study("minimize")
    for k in range(3):
        _complete(study, {e: (1.0 - 0.1 * k) / (e + 1) for e in range(6)})
    assert _first_pruned_step(pruner, study, [5.0, 5.0, 6.0, 6.0, 7.0, 7.0]) is not None  # a loss going up
    assert _first_pruned_step(pruner, study, [0.1, 0.05, 0.02, 0.01, 0.005, 0.002]) is None
