"""Property tests: for many seeds and run contexts, every sampled parameter set respects
bounds, options, conditions and dependencies, and renders to a spec that validates."""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automl.search_space import (
    SearchSpace,
    TrainSchema,
    default_schema_path,
    default_space_path,
    default_template_path,
    load_space_overrides,
    load_spec_template,
    render_spec,
    search_spaces_dir,
)
from automl.search_space.dotted import get_path, parse_path
from automl.search_space.params import ChoiceParam, FixedParam, NumberParam
from automl.search_space.schema import leaf_problem

from reference_files import tao_file
from space_schemas import classifier_schema_text

PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)


@functools.cache
def _schema(name: str) -> TrainSchema:
    if name == "tao":
        return TrainSchema.load(tao_file("train.schema.json"))
    if name == "classifier":
        return TrainSchema.from_json(classifier_schema_text(), "classifier.schema.json")
    return TrainSchema.load(default_schema_path())


@functools.cache
def _template(name: str) -> dict:
    if name == "tao":
        return load_spec_template(tao_file("spec_template_train.yaml"))
    if name == "classifier":
        return _schema(name).default_spec()
    return load_spec_template(default_template_path())


@functools.cache
def _space(schema: str, space_file: str | None, context: tuple) -> SearchSpace:
    path = {None: None, "curated": default_space_path(),
            "example": search_spaces_dir() / "dino/override_example.yaml"}[space_file]  # fmt: skip
    return SearchSpace.build(_schema(schema), load_space_overrides(path), context=dict(context))


def _sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "tpe":  # TPE after two random trials: exercises dynamic ranges in TPE too
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
    return optuna.samplers.RandomSampler(seed=seed)


def _sample_sets(space: SearchSpace, sampler: str, seed: int, n: int = 4) -> list[dict]:
    study = optuna.create_study(sampler=_sampler(sampler, seed))
    sets = []
    for i in range(n):
        trial = study.ask()
        sets.append(space.suggest(trial))
        study.tell(trial, float(i % 3))
    return sets


def _check(space: SearchSpace, values: dict, template: dict) -> dict:
    schema = space.schema
    assert list(values) == space.paths  # every parameter, parents before dependants
    done: set[str] = set()
    for param in space.params:
        value = values[param.path]
        for parent in param.parents():
            assert parent not in space.paths or parent in done, (param.path, parent)
        done.add(param.path)
        if isinstance(param, NumberParam):
            low, high = param.effective_range(lambda p: space.value_of(p, values))
            assert param.low <= low <= value <= high <= param.high, (param.path, value, low, high)
            if param.kind == "int":
                assert isinstance(value, int) and not isinstance(value, bool)
            if param.step:
                assert math.isclose(value / param.step, round(value / param.step), abs_tol=1e-9)
        elif isinstance(param, ChoiceParam):
            assert value in param.choices
        elif isinstance(param, FixedParam):
            assert value == param.value
    spec = render_spec(template, {**space.context, **values}, schema)  # validates every key
    for path, value in values.items():
        assert get_path(spec, parse_path(path)) == value
        field = schema.resolve(path)
        if field is not None and field.type not in ("list", "collection"):
            assert leaf_problem(field, value, spec) is None, (path, value)
    for field in schema.fields.values():  # relative conditions hold in the rendered spec
        cond = field.math_cond
        if cond is not None and cond.relative and field.path in values:
            parent = get_path(spec, parse_path(field.depends_on))
            assert cond.holds(values[field.path], parent), (field.path, values[field.path], parent)
    if "model.num_select" in values:  # DINO / TAO's cap
        queries = get_path(spec, ("model", "num_queries"))
        classes = get_path(spec, ("dataset", "num_classes"))
        assert spec["model"]["num_select"] <= min(queries, queries * classes - 1)
    return spec


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), classes=st.integers(1, 100), sampler=st.sampled_from(["random", "tpe"]))
def test_tao_dino_schema_space(seed, classes, sampler):
    space = _space("tao", None, (("dataset.num_classes", classes),))
    for values in _sample_sets(space, sampler, seed):
        _check(space, values, _template("tao"))


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    classes=st.integers(1, 100),
    epochs=st.integers(1, 60),
    space_file=st.sampled_from(["curated", "example"]),
    sampler=st.sampled_from(["random", "tpe"]),
)
def test_bundled_dino_spaces_render_specs_the_trainer_accepts(seed, classes, epochs, space_file, sampler):
    from dino.config import load_spec

    context = (("dataset.num_classes", classes), ("train.num_epochs", epochs))
    space = _space("dino", space_file, context)
    for values in _sample_sets(space, sampler, seed, n=3):
        spec = _check(space, values, _template("dino"))
        steps = spec["train"]["optim"]["lr_steps"]
        assert all(1 <= s <= max(1, epochs - 1) for s in steps)
        with tempfile.TemporaryDirectory() as tmp:  # the trainer's own loader accepts it
            path = Path(tmp) / "spec.yaml"
            path.write_text(yaml.safe_dump(spec))
            loaded, _ = load_spec(path)
        assert loaded.model.num_queries == spec["model"]["num_queries"]
        assert loaded.train.optim.lr == pytest.approx(spec["train"]["optim"]["lr"])


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), classes=st.integers(2, 100), sampler=st.sampled_from(["random", "tpe"]))
def test_dino_schema_derived_space(seed, classes, sampler):
    space = _space("dino", None, (("dataset.num_classes", classes),))
    for values in _sample_sets(space, sampler, seed):
        _check(space, values, _template("dino"))


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), sampler=st.sampled_from(["random", "tpe"]))
def test_other_network_schema_works_unchanged(seed, sampler):
    space = _space("classifier", None, ())
    for values in _sample_sets(space, sampler, seed):
        _check(space, values, _template("classifier"))
        hidden = values["model.head.hidden_channels"]
        assert hidden & (hidden - 1) == 0  # power of two
        assert values["dataset.augmentation.crop_size"] % 32 == 0
        assert 0 < values["train.optim.min_lr"] < values["train.optim.lr"]


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), space_file=st.sampled_from(["curated", "example"]))
def test_encode_then_enqueue_reproduces_a_set(seed, space_file):
    """Warm start: enqueue_trial(space.encode(values)) samples exactly those values."""
    space = _space("dino", space_file, (("dataset.num_classes", 5), ("train.num_epochs", 10)))
    (values,) = _sample_sets(space, "random", seed, n=1)
    sampled = {p: v for p, v in values.items() if space[p].kind not in ("fixed", "derived")}
    study = optuna.create_study()
    study.enqueue_trial(space.encode(sampled))
    trial = study.ask()
    assert space.suggest(trial) == values
    assert space.decode(trial.params) == values
