"""Warm start: tonight's study gets exactly the previous nights' top-k parameter sets, and
(optionally) their trials as sampler history that never counts as tonight's own."""

import datetime as dt

import optuna
import pytest
import yaml
from optuna.trial import TrialState, create_trial

from automl.search_space import SearchSpace, TrainSchema, default_schema_path, load_space_overrides
from automl.study import attrs
from automl.study.budget import finished_shares
from automl.study.results import best_own_trial
from automl.study.warm_start import PastTrial, fit_to_space, night_of, previous_nights, top_k, warm_start

LR = "train.optim.lr"
WD = "train.optim.weight_decay"


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"base": "none", "parameters": {
        LR: {"min": 1e-5, "max": 1e-3, "scale": "log"}, WD: {"min": 1e-6, "max": 1e-2, "scale": "log"}}}))
    return SearchSpace.build(TrainSchema.load(default_schema_path()), overrides=load_space_overrides(path),
                             context={"dataset.num_classes": 3})


def add_night(storage, name, trials, space, direction="maximize", **trial_attrs):
    """A past night: ``trials`` is a list of (lr, wd, value, state)."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    for lr, wd, value, state in trials:
        params = {LR: lr, WD: wd}
        study.add_trial(create_trial(params=params, distributions=fit_to_space(space, params), state=state,
                                     value=value if state == TrialState.COMPLETE else None,
                                     user_attrs=dict(trial_attrs)))
    return study


def test_night_names():
    assert night_of("dino-20261125", "dino") == dt.date(2026, 11, 25)
    assert night_of("dino-x-20261125", "dino") is None and night_of("dino", "dino") is None
    assert night_of("dino-20261345", "dino") is None  # not a date


def test_top_k_distinct_sets_best_first():
    trials = [PastTrial("d-20261101", 0, 0.5, {LR: 1e-4}), PastTrial("d-20261102", 0, 0.7, {LR: 1e-4}),
              PastTrial("d-20261102", 1, 0.6, {LR: 2e-4}), PastTrial("d-20261101", 1, 0.2, {LR: 3e-4})]
    best = top_k(trials, 2, maximize=True)
    assert [(t.source, t.value) for t in best] == [("d-20261102#0", 0.7), ("d-20261102#1", 0.6)]
    assert [t.value for t in top_k(trials, 2, maximize=False)] == [0.2, 0.5]


def test_warm_start_enqueues_exactly_the_previous_top_k(tmp_path, space):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    add_night(storage, "dino-20261101", [(1e-4, 1e-4, 0.50, C), (2e-4, 1e-4, 0.61, C), (9e-4, 1e-3, 0.0, P)], space)
    add_night(storage, "dino-20261102", [(1e-4, 1e-4, 0.55, C), (3e-4, 1e-5, 0.58, C), (5e-5, 1e-4, 0.0, F),
                                         (4e-4, 1e-5, 0.40, C)], space)
    # not previous nights of "dino": another nightly, a plain study, a later night
    add_night(storage, "other-20261101", [(3e-4, 1e-4, 0.99, C)], space)
    add_night(storage, "dino", [(3e-4, 1e-4, 0.98, C)], space)
    add_night(storage, "dino-20261110", [(3e-4, 1e-4, 0.97, C)], space)
    # a trial seeded into an earlier night is not that night's result
    add_night(storage, "dino-20261103", [(6e-4, 1e-4, 0.96, C)], space, **{attrs.SEEDED_FROM: "dino-20261030#0"})

    tonight = optuna.create_study(study_name="dino-20261105", storage=storage, direction="maximize")
    ws = warm_start(tonight, space, "dino", dt.date(2026, 11, 5), top=3, nights=7, seed_sampler=False, maximize=True)

    assert ws.from_studies == ("dino-20261103", "dino-20261102", "dino-20261101")
    assert [p.source for p in ws.enqueued] == ["dino-20261101#1", "dino-20261102#1", "dino-20261102#0"]
    waiting = tonight.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{LR: 2e-4, WD: 1e-4}, {LR: 3e-4, WD: 1e-5},
                                                                 {LR: 1e-4, WD: 1e-4}]
    assert [t.user_attrs[attrs.WARM_START_FROM] for t in waiting] == [p.source for p in ws.enqueued]
    # a resumed night calls it again: nothing is enqueued twice
    warm_start(tonight, space, "dino", dt.date(2026, 11, 5), top=3, nights=7, seed_sampler=False, maximize=True)
    assert len(tonight.get_trials(states=(TrialState.WAITING,))) == 3
    # only the newest `nights` previous nights are read
    assert previous_nights(storage, "dino", dt.date(2026, 11, 5), 1) == ["dino-20261103"]


def test_minimized_metrics_take_the_lowest(tmp_path, space):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    C = TrialState.COMPLETE
    add_night(storage, "loss-20261101", [(1e-4, 1e-4, 0.5, C), (2e-4, 1e-4, 0.2, C), (3e-4, 1e-4, 0.9, C)], space,
              direction="minimize")
    tonight = optuna.create_study(study_name="loss-20261102", storage=storage, direction="minimize")
    ws = warm_start(tonight, space, "loss", dt.date(2026, 11, 2), top=1, nights=3, seed_sampler=False,
                    maximize=False)
    assert [p.params[LR] for p in ws.enqueued] == [2e-4]


def test_sets_that_no_longer_fit_tonights_space_are_left_out(tmp_path, space):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    old = optuna.create_study(study_name="dino-20261101", storage=storage, direction="maximize")
    wide = optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True)
    old.add_trial(create_trial(params={LR: 5e-3, WD: 1e-4}, distributions={LR: wide, WD: wide}, value=0.9))  # lr out
    old.add_trial(create_trial(params={LR: 1e-4, "model.gone": 0.05}, value=0.8,
                               distributions={LR: wide, "model.gone": wide}))  # a removed parameter
    old.add_trial(create_trial(params={LR: 1e-4, WD: 1e-4}, distributions={LR: wide, WD: wide}, value=0.3))
    tonight = optuna.create_study(study_name="dino-20261102", storage=storage, direction="maximize")
    ws = warm_start(tonight, space, "dino", dt.date(2026, 11, 2), top=3, nights=3, seed_sampler=True, maximize=True)
    assert ws.left_out == 2 and [p.source for p in ws.enqueued] == ["dino-20261101#2"] and ws.seeded == 1


def test_seeded_history_is_not_tonights_result_nor_its_budget(tmp_path, space):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    C = TrialState.COMPLETE
    add_night(storage, "dino-20261101", [(1e-4, 1e-4, 0.5, C), (2e-4, 1e-4, 0.9, C)], space)
    tonight = optuna.create_study(study_name="dino-20261102", storage=storage, direction="maximize",
                                  sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    ws = warm_start(tonight, space, "dino", dt.date(2026, 11, 2), top=0, nights=3, seed_sampler=True, maximize=True)
    assert ws.seeded == 2 and ws.enqueued == ()
    seeded = tonight.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs[attrs.SEEDED_FROM] for t in seeded) == ["dino-20261101#0", "dino-20261101#1"]
    assert all(not t.intermediate_values for t in seeded)  # the pruner judges tonight's curves only
    assert finished_shares(tonight.get_trials(deepcopy=False)) == 0 and best_own_trial(tonight) is None
    assert tonight.best_trial.user_attrs[attrs.SEEDED_FROM]  # what Optuna alone would call the best
    # the history reaches the sampler: TPE is past its 2 start-up trials and samples near the good lr
    trial = tonight.ask()
    space.suggest(trial)
    tonight.tell(trial, 0.1)
    assert finished_shares(tonight.get_trials(deepcopy=False)) == 1 and best_own_trial(tonight).number == trial.number
    warm_start(tonight, space, "dino", dt.date(2026, 11, 2), top=0, nights=3, seed_sampler=True, maximize=True)
    assert len(tonight.trials) == 3  # not seeded twice
