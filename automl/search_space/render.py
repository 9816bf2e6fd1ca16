"""The spec a trial runs: the template with sampled, fixed, data and path values set.

Every key is checked against the schema (unknown keys get a did-you-mean), every value
against its field (type, enum, limits, ``math_cond``), and the trainer's cross-field
rules (:mod:`dino.config.rules`: ``num_select``, feature levels, ``gpu_ids``) before any
GPU time is spent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from automl.errors import ConfigError
from automl.search_space.constraints import spec_errors
from automl.search_space.dotted import get_path, parse_path, set_path
from automl.search_space.schema import TrainSchema
from dino.config.yaml_values import load_yaml


def render_spec(template: Mapping[str, Any], assignments: Mapping[str, Any], schema: TrainSchema) -> dict:
    """A new spec: ``template`` with each ``dotted.path`` (``a.b[0].c`` too) set, validated."""
    spec = copy.deepcopy(dict(template))
    for path, value in assignments.items():
        schema.resolve(path, "cannot set ")  # unknown key: ConfigError with did-you-mean
        try:
            set_path(spec, parse_path(path), copy.deepcopy(value))
        except ValueError as exc:
            raise ConfigError(f"cannot set {path}: {exc}") from None
    validate_spec(spec, schema)
    return spec


def validate_spec(spec: Mapping[str, Any], schema: TrainSchema) -> None:
    """Raise ConfigError listing every problem of ``spec`` against ``schema``."""
    problems = schema.spec_problems(spec)

    def lookup(path: str) -> Any:
        return get_path(spec, parse_path(path), None)

    problems += [str(v) for v in spec_errors(schema.fields, lookup)]
    if problems:
        listed = "\n  ".join(problems)
        raise ConfigError(f"the spec does not fit the train schema {schema.source}:\n  {listed}")


def load_spec_template(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"spec template {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"spec template {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"spec template {path}: expected a mapping at the top")
    return data


def write_spec(spec: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return path
