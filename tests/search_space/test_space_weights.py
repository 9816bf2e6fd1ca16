"""option_weights: Optuna has no weighted categorical, so a uniform u in [0, 1) is mapped
through the cumulative weights. These tests show the weights shape random sampling."""

from __future__ import annotations

import textwrap
from collections import Counter

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automl.search_space import SearchSpace, load_space_overrides
from automl.search_space.params import ChoiceParam


def _frequencies(space: SearchSpace, path: str, n: int, seed: int = 0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    counts = Counter(space.suggest(study.ask())[path] for _ in range(n))
    return {k: v / n for k, v in counts.items()}


def test_schema_option_weights_shape_random_sampling(classifier_schema, tmp_path):
    n = 2000
    only = tmp_path / "only.yaml"  # just this parameter, with the schema's option_weights
    only.write_text("base: none\nparameters:\n  train.optim.policy: {}\n")
    weighted = _frequencies(SearchSpace.build(classifier_schema, load_space_overrides(only)), "train.optim.policy", n)
    # schema weights 0.6 / 0.3 / 0.1; binomial sd at n=2000 is <= 0.011, so 0.035 is > 3 sd
    assert weighted["cosine"] == pytest.approx(0.6, abs=0.035)
    assert weighted["step"] == pytest.approx(0.3, abs=0.035)
    assert weighted["linear"] == pytest.approx(0.1, abs=0.035)

    # the same options without weights are drawn uniformly: the weights made the difference
    path = tmp_path / "uniform.yaml"
    path.write_text("base: none\nparameters:\n  train.optim.policy: {values: [cosine, step, linear]}\n")
    uniform = _frequencies(SearchSpace.build(classifier_schema, load_space_overrides(path)), "train.optim.policy", n)
    for option in ("cosine", "step", "linear"):
        assert uniform[option] == pytest.approx(1 / 3, abs=0.035)
    assert weighted["cosine"] - uniform["cosine"] > 0.2
    assert uniform["linear"] - weighted["linear"] > 0.15


def test_space_file_weights_and_zero_weight(dino_schema, tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent("""
        base: none
        parameters:
          model.backbone: {values: [resnet_18, resnet_34, resnet_50], weights: [0, 1, 3]}
        """))  # fmt: skip
    space = SearchSpace.build(dino_schema, load_space_overrides(path))
    freq = _frequencies(space, "model.backbone", 2000, seed=3)
    assert "resnet_18" not in freq  # weight 0: never drawn
    assert freq["resnet_50"] == pytest.approx(0.75, abs=0.035)


def test_weighted_choice_records_the_value_and_works_with_tpe(classifier_schema):
    space = SearchSpace.build(classifier_schema)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    for i in range(8):
        trial = study.ask()
        values = space.suggest(trial)
        assert 0.0 <= trial.params["train.optim.policy:u"] <= 1.0
        assert trial.user_attrs["train.optim.policy"] == values["train.optim.policy"]
        study.tell(trial, 1.0 if values["train.optim.policy"] == "step" else 0.0)
    best = study.best_trial
    assert space.decode(best.params)["train.optim.policy"] == best.user_attrs["train.optim.policy"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=2, max_size=6).filter(lambda w: sum(w) > 0))
def test_cumulative_mapping_matches_the_weights_exactly(weights):
    choices = tuple(f"o{i}" for i in range(len(weights)))
    param = ChoiceParam("x", "choice", "test", choices=choices, weights=tuple(map(float, weights)))
    grid = 5000
    counts = Counter(param.index_of_u(i / grid) for i in range(grid + 1))  # u = 1.0 included
    total = sum(weights)
    for i, w in enumerate(weights):
        assert counts.get(i, 0) / (grid + 1) == pytest.approx(w / total, abs=5e-4)
        if w == 0:
            assert i not in counts
    for value in (c for c, w in zip(choices, weights) if w > 0):  # encode lands inside the interval
        (u,) = param.encode(value, lambda p: None).values()
        assert choices[param.index_of_u(u)] == value
