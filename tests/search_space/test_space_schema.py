"""Loading TAO-format train schemas, and each malformed-schema error naming its field."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml

from automl.errors import ConfigError, SchemaError
from automl.search_space import TrainSchema, validate_spec
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


def test_min_greater_than_max_names_the_field():
    data = _schema_with("train.optim.weight_decay", minimum=0.5, maximum=0.1)
    with pytest.raises(SchemaError, match=r"field 'train\.optim\.weight_decay': minimum 0\.5 is greater than maximum 0\.1"):
        TrainSchema.from_dict(data, "x.json")


def test_depends_on_cycle_is_an_error():
    data = _schema_with("train.optim.lr", depends_on="train.optim.min_lr")
    with pytest.raises(SchemaError, match=r"depends_on cycle .*train\.optim\.(lr|min_lr) -> .*train\.optim\.(lr|min_lr)"):
        TrainSchema.from_dict(data, "x.json")


def test_depends_on_unknown_field_gets_did_you_mean():
    data = _schema_with("train.optim.min_lr", depends_on="train.optim.lrr")
    with pytest.raises(SchemaError, match=r"'train\.optim\.min_lr' depends_on 'train\.optim\.lrr'.*did you mean 'train\.optim\.lr'"):
        TrainSchema.from_dict(data, "x.json")


def test_unknown_math_cond_names_the_field():
    data = _schema_with("train.optim.lr", math_cond="~ 3")
    with pytest.raises(SchemaError, match=r"field 'train\.optim\.lr': unknown math_cond '~ 3'"):
        TrainSchema.from_dict(data, "x.json")


def test_unknown_default_parameter_path():
    data = copy.deepcopy(CLASSIFIER_SCHEMA)
    data["automl_default_parameters"].append("train.optim.lrate")
    with pytest.raises(SchemaError, match=r"'train\.optim\.lrate', which is not a field.*did you mean 'train\.optim\.lr'"):
        TrainSchema.from_dict(data, "x.json")


def test_unknown_type_and_bad_option_weights():
    with pytest.raises(SchemaError, match=r"unknown type 'flaot' \(did you mean 'float'\?\)"):
        TrainSchema.from_dict(_schema_with("train.optim.lr", type="flaot"), "x.json")
    with pytest.raises(SchemaError, match="one weight per enum value"):
        TrainSchema.from_dict(_schema_with("train.optim.policy", option_weights=[1, 2]), "x.json")
    with pytest.raises(SchemaError, match="weights must be finite numbers >= 0"):
        TrainSchema.from_dict(_schema_with("train.optim.policy", option_weights=[1, -2, 1]), "x.json")


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
    ],
)  # fmt: skip
def test_math_cond_forms(text, value, parent, holds):
    assert parse_math_cond(text).holds(value, parent) is holds


@pytest.mark.parametrize("text", ["~ 3", "> x", ">> 1", "/ depends_on", "^ 1.5", "/ 0", ""])
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
