"""Loading TAO-format train schemas, and each malformed-schema error naming its field."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import yaml

from automl.errors import ConfigError, SchemaError
from automl.search_space import SearchSpace, TrainSchema, load_space_overrides, validate_spec
from automl.search_space.math_cond import MathCondError, is_power, parse_math_cond

from reference_files import tao_file
from space_schemas import CLASSIFIER_SCHEMA


def test_tao_dino_schema_loads_with_infinity(tao_schema_path):
    text = tao_schema_path.read_text()
    assert "Infinity" in text  # the token strict JSON parsers reject
    schema = TrainSchema.load(tao_schema_path)
    assert schema.network == "dino"
    assert schema.fields["model.num_queries"].maximum == math.inf
    assert schema.fields["model.num_select"].depends_on == "model.num_queries"
    assert schema.fields["train.optim.lr"].math_cond.text == "> 0.0"
    assert "dataset.workers" in schema.default_parameters
    assert "train.optim.lr_steps" in schema.disabled_parameters
    # list-of-mapping fields know their item keys
    assert schema.field("dataset.train_data_sources[0].json_file").type == "string"


def test_tao_template_validates_against_tao_schema(tao_schema):
    template = yaml.safe_load(tao_file("spec_template_train.yaml").read_text())
    validate_spec(template, tao_schema)


def test_unknown_spec_key_gets_did_you_mean(tao_schema):
    with pytest.raises(ConfigError, match=r"no key 'num_querys' \(did you mean 'num_queries'\?\)"):
        tao_schema.field("model.num_querys")
    with pytest.raises(ConfigError, match=r"is a list; index it"):
        tao_schema.field("dataset.train_data_sources.image_dir")


def _schema_with(path: str, **changes) -> dict:
    data = copy.deepcopy(CLASSIFIER_SCHEMA)
    node = data
    for part in path.split("."):
        node = node["properties"][part]
    node.update(changes)
    return data


def test_not_json_names_the_file_and_line(write):
    path = write("broken.schema.json", '{"type": "object",\n "properties": {"a": }\n}')
    with pytest.raises(SchemaError, match=r"broken\.schema\.json is not valid JSON: .* line 2"):
        TrainSchema.load(path)


def test_nan_and_non_object_are_rejected(write):
    with pytest.raises(SchemaError, match="NaN is not allowed"):
        TrainSchema.load(write("nan.json", '{"properties": {"a": {"type": "float", "maximum": NaN}}}'))
    with pytest.raises(SchemaError, match="must be a JSON object"):
        TrainSchema.load(write("list.json", "[1, 2]"))


def test_missing_schema_file(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        TrainSchema.load(tmp_path / "nope.json")


@pytest.mark.parametrize("path, changes, reason", [
    ("train.optim.weight_decay", dict(minimum=0.5, maximum=0.1), "minimum 0.5 is greater than maximum 0.1"),
    ("train.optim.min_lr", dict(depends_on="train.optim.lrr"),
     "depends_on 'train.optim.lrr', which is not a field of the schema (did you mean 'train.optim.lr'?)"),
    ("train.optim.lr", dict(math_cond="~ 3"), "unknown math_cond '~ 3'"),
    ("train.optim.lr", dict(type="flaot"), "unknown type 'flaot' (did you mean 'float'?)"),
    ("train.optim.policy", dict(option_weights=[1, 2]), "one weight per enum value"),
    ("train.optim.policy", dict(option_weights=[1, -2, 1]), "weights must be finite numbers >= 0"),
])  # fmt: skip
def test_a_field_the_loader_cannot_interpret_is_left_out_with_one_warning(write, path, changes, reason):
    schema = TrainSchema.from_dict(_schema_with(path, **changes), "x.json")
    assert list(schema.skipped) == [path] and reason in schema.skipped[path]
    (warning,) = schema.warnings
    assert warning.startswith(f"x.json: {path!r} cannot be interpreted: ") and reason in warning
    field = schema.fields[path]
    assert field.unsupported is not None and field.default == schema.default_of(path) is not None
    validate_spec(schema.default_spec(), schema)  # it keeps its default: specs still render and validate
    space = SearchSpace.build(schema)  # the rest of the schema's space is built
    assert path not in space.paths and "cannot be interpreted" in space.excluded[path]
    assert [w for w in space.warnings if repr(path) in w] == [warning]  # once
    tune = write("tune.yaml", f"base: none\nparameters:\n  {path}: {{}}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(path)} cannot be tuned: its entry in x.json cannot be "
                                          rf"interpreted \(.*{re.escape(reason)}"):
        SearchSpace.build(schema, load_space_overrides(tune))


def test_depends_on_cycle_is_an_error():
    data = _schema_with("train.optim.lr", depends_on="train.optim.min_lr")
    with pytest.raises(SchemaError, match=r"depends_on cycle .*train\.optim\.(lr|min_lr) -> .*train\.optim\.(lr|min_lr)"):
        TrainSchema.from_dict(data, "x.json")


def test_unknown_default_parameter_path_is_left_out_with_did_you_mean():
    data = copy.deepcopy(CLASSIFIER_SCHEMA)
    data["automl_default_parameters"].append("train.optim.lrate")
    schema = TrainSchema.from_dict(data, "x.json")
    assert "train.optim.lrate" not in schema.default_parameters
    (warning,) = schema.warnings
    assert "'train.optim.lrate' is listed in automl_default_parameters but is not a field of the schema " \
           "(did you mean 'train.optim.lr'?)" in warning


def test_option_weights_as_mapping():
    data = _schema_with("train.optim.policy", option_weights={"cosine": 3, "step": 1, "linear": 0})
    schema = TrainSchema.from_dict(data, "x.json")
    assert schema.fields["train.optim.policy"].option_weights == (3.0, 1.0, 0.0)


@pytest.mark.parametrize(
    "text, value, parent, holds",
    [
        ("> 0.0", 0.0, None, False), ("> 0.0", 1e-9, None, True), (">0", 1, None, True),
        (">= 2", 2, None, True), ("< 1.0", 1.0, None, False), ("<= 1", 1, None, True),
        ("!= 0", 0, None, False), ("!= 0", -1, None, True),
        ("> depends_on", 5, 5, False), ("> depends_on", 6, 5, True), ("<= depends_on", 5, 5, True),
        ("/ 8", 24, None, True), ("/ 8", 20, None, False), ("^ 2", 64, None, True), ("^ 2", 48, None, False),
        ("^ 2", 0.25, None, True), ("/ 0.5", 1.5, None, True),
        # several clauses, all must hold (TAO image classification's distill.loss_lambda)
        ("> 0.0 <= 1.0", 1.0, None, True), ("> 0.0 <= 1.0", 0.0, None, False), ("> 0.0 <= 1.0", 1.5, None, False),
        (">= 1 and < 5", 5, None, False), (">= 1, != 3", 3, None, False), ("/ 8 > 0", 16, None, True),
        ("> depends_on <= 10", 11, 5, False), ("> depends_on <= 10", 10, 5, True),
    ],
)  # fmt: skip
def test_math_cond_forms(text, value, parent, holds):
    assert parse_math_cond(text).holds(value, parent) is holds


@pytest.mark.parametrize("text", ["~ 3", "> x", ">> 1", "/ depends_on", "^ 1.5", "/ 0", "", "and > 1", "> 1 junk",
                                  "> depends_on < depends_on", "/ 2 ^ 2", "/ 2 / 4"])
def test_math_cond_rejects(text):
    with pytest.raises(MathCondError):
        parse_math_cond(text)


def test_is_power_edges():
    assert is_power(1, 2) and is_power(1024, 2) and is_power(1000, 10)
    assert not is_power(0, 2) and not is_power(-4, 2) and not is_power(3, 2)


def test_default_spec_of_a_schema_validates(classifier_schema):
    spec = classifier_schema.default_spec()
    assert spec["train"]["optim"]["lr"] == 0.01
    validate_spec(spec, classifier_schema)
    json.dumps(spec)  # plain data
