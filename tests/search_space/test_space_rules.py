"""The rules that turn schema fields into ranges, and how they beat TAO's own sampling."""

from __future__ import annotations

import math

import optuna
import pytest

from automl.errors import ConfigError
from automl.search_space import SearchSpace, TrainSchema, load_space_overrides
from automl.search_space.params import ChoiceParam, DerivedParam, NumberParam


@pytest.fixture(scope="module")
def tao_space(tao_schema):
    return SearchSpace.build(tao_schema, context={"dataset.num_classes": 5})


def test_learning_rates_are_log_scaled_near_their_default_not_uniform_in_0_1(tao_space):
    lr = tao_space["train.optim.lr"]  # TAO's schema says [0, 1]; TAO samples it uniformly
    assert isinstance(lr, NumberParam) and lr.log
    assert lr.low == pytest.approx(2e-6) and lr.high == pytest.approx(2e-2)
    row = {r["parameter"]: r for r in tao_space.describe()}["train.optim.lr"]
    assert "rate/decay over 4.0 decades" in row["scale"]
    assert "rate rule" in row["source"]
    for name in ("lr_backbone", "weight_decay", "lr_decay", "lr_linear_proj_mult"):
        assert tao_space[f"train.optim.{name}"].log, name
    # momentum is a bounded fraction, not a rate: linear, and '> 0.0' excludes 0
    momentum = tao_space["train.optim.momentum"]
    assert not momentum.log and 0.0 < momentum.low < 1e-300 and momentum.high == 1.0
    assert {r["parameter"]: r for r in tao_space.describe()}["train.optim.momentum"]["range"] == "(0, 1]"


def test_resource_settings_are_never_tuned_by_default(tao_space):
    assert "dataset.workers" not in tao_space.paths  # TAO tunes it
    assert "resource setting" in tao_space.excluded["dataset.workers"]
    assert "dataset.batch_size" in tao_space.excluded


def test_infinite_max_gets_a_finite_documented_span(tao_space):
    queries = tao_space["model.num_queries"]  # schema: [1, Infinity], default 300
    assert (queries.low, queries.high) == (150, 600)
    assert "span rule" in queries.source and "Infinity" in queries.source
    layers = tao_space["model.enc_layers"]  # schema: minimum 1, no maximum, default 6
    assert (layers.low, layers.high) == (3, 12)


def test_wide_int_range_is_log_scaled(tao_space):
    step = tao_space["train.optim.lr_step_size"]  # [1, 10000]
    assert step.log and "int over 4.0 decades" in step.row()["scale"]


def test_depends_on_parents_come_first(tao_space):
    order = tao_space.paths
    assert order.index("model.num_queries") < order.index("model.num_select")
    assert order.index("dataset.augmentation.train_random_crop_min") < order.index(
        "dataset.augmentation.train_random_crop_max"
    )


def test_lr_samples_spread_over_decades(tao_space):
    """Uniform sampling of [0, 1] puts ~100% of draws above 1e-2; ours centres on decades."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = [tao_space.suggest(study.ask())["train.optim.lr"] for _ in range(400)]
    decades = [math.floor(math.log10(x)) for x in draws]
    for d in (-6, -5, -4, -3):
        assert decades.count(d) > 40, (d, decades.count(d))


def test_num_select_cap_with_one_class(tao_schema):
    space = SearchSpace.build(tao_schema, context={"dataset.num_classes": 1})  # cap = nq - 1
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(50):
        values = space.suggest(study.ask())
        assert 1 <= values["model.num_select"] <= values["model.num_queries"] - 1


def test_infeasible_cap_is_caught_at_build(dino_schema):
    # our schema leaves num_select unbounded, so the span rule gives [150, 600]; with one
    # class the cap num_queries - 1 can fall below 150: a clear error before any trial
    with pytest.raises(
        ConfigError,
        match=r"model\.num_select: when model\.num_queries = 150, dataset\.num_classes = 1.*narrow the parent's range",
    ):
        SearchSpace.build(dino_schema, context={"dataset.num_classes": 1})


def test_power_multiple_and_weights_on_another_network(classifier_schema):
    space = SearchSpace.build(classifier_schema)
    hidden = space["model.head.hidden_channels"]
    assert isinstance(hidden, ChoiceParam) and hidden.choices == (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    assert hidden.ordered and hidden.kind == "power of 2"
    crop = space["dataset.augmentation.crop_size"]
    assert crop.step == 32 and crop.low == 32 and crop.high == 1024
    policy = space["train.optim.policy"]
    assert policy.weights == (0.6, 0.3, 0.1) and "option_weights from the schema" in policy.source
    lr = space["train.optim.lr"]  # [0, Infinity] with '> 0.0', default 0.01 -> rate window
    assert lr.log and (lr.low, lr.high) == pytest.approx((1e-4, 1.0))
    min_lr = space["train.optim.min_lr"]
    assert [b.text for b in min_lr.bounds] == ["< train.optim.lr"]
    warmup = space["train.optim.warmup_epochs"]  # [0, Infinity], default 5
    assert (warmup.low, warmup.high) == (2, 10)
    assert space["train.ema"].choices == (False, True)
    assert "dataset.data_sources" in space.excluded and "dataset.workers" in space.excluded
    assert not any(isinstance(p, DerivedParam) for p in space.params)  # no DINO rule here


def test_no_usable_default_and_no_max_asks_for_a_range(tmp_path):
    schema = TrainSchema.from_dict(
        {
            "automl_default_parameters": ["a.offset"],
            "properties": {"a": {"type": "collection", "properties": {
                "offset": {"type": "float", "minimum": 0.0, "maximum": math.inf, "default": 0.0}}}},
        },
        "s.json",
    )  # fmt: skip
    # listed by the schema only: left out with a warning, the rest of the space is built
    space = SearchSpace.build(schema)
    assert "a.offset" not in space.paths and "no finite maximum" in space.excluded["a.offset"]
    (warning,) = space.warnings
    assert "a.offset: the schema gives no finite maximum" in warning and "left out of the search space" in warning
    # asked for by a space file without a range: the error, before any trial
    tune = tmp_path / "tune.yaml"
    tune.write_text("base: none\nparameters:\n  a.offset: {}\n")
    with pytest.raises(ConfigError, match=r"a\.offset: the schema gives no finite maximum .* set min and max"):
        SearchSpace.build(schema, load_space_overrides(tune))


def test_not_equal_condition_on_an_int_range():
    schema = TrainSchema.from_dict(
        {
            "automl_default_parameters": ["x", "y"],
            "properties": {
                "x": {"type": "int", "minimum": -2, "maximum": 3, "math_cond": "!= 0", "default": -1},
                "y": {"type": "int", "minimum": 0, "maximum": 9, "math_cond": "!= 0", "default": 4},
            },
        },
        "s.json",
    )
    space = SearchSpace.build(schema)
    assert space["x"].choices == (-2, -1, 1, 2, 3)  # the hole is skipped
    assert (space["y"].low, space["y"].high) == (1, 9)  # an excluded end shrinks the range
