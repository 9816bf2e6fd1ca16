"""Space files: YAML that says what to tune, on top of the schema or another space file.

```yaml
base: default_space.yaml   # 'schema' (its automl_default_parameters, with our rules),
                           # 'none' (only what this file lists), or another space file
                           # (relative to this one, else to the bundled search_spaces/)
parameters:                # add a parameter or change one the base has
  train.optim.lr: {max: 5.0e-4}                     # restrict a range (the rest is kept)
  train.optim.weight_decay: {scale: linear}         # change the scale
  model.hidden_dim: {values: [128, 256]}            # add one the schema disables
  model.backbone: {values: [resnet_18, resnet_34], weights: [3, 1]}
  train.optim.lr_steps: {rule: epoch_fraction, min: 0.6, max: 0.95}
fixed:                     # set for every trial, never sampled
  model.dn_number: 100
remove:                    # drop from the base
  - dataset.augmentation.horizontal_flip_prob
```

Per parameter: ``min``, ``max``, ``scale`` (log | linear), ``step`` (multiple of),
``values`` (options; numbers are sampled in order), ``weights`` (per value, list or
mapping), ``math_cond``, ``depends_on``, ``rule: epoch_fraction`` with ``fractions``
(fixed) or ``min``/``max`` (sampled) and ``epochs`` (default ``train.num_epochs``).
An empty entry (``model.cls_loss_coef: {}``) tunes it with the schema's rules.
Entries merge onto the base's entry: ``values`` replaces a range and vice versa.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from automl.errors import ConfigError
from automl.search_space.dotted import did_you_mean, parse_path
from automl.search_space.locations import search_spaces_dir
from automl.search_space.math_cond import MathCondError, parse_math_cond
from dino.config.yaml_values import load_yaml

TOP_KEYS = ("base", "description", "parameters", "fixed", "remove")
PARAM_KEYS = ("min", "max", "scale", "step", "values", "weights", "math_cond", "depends_on",
              "rule", "fractions", "epochs")  # fmt: skip
RANGE_KEYS = ("min", "max", "scale", "step", "rule", "fractions", "epochs")
CHOICE_KEYS = ("values", "weights")
RULES = ("epoch_fraction",)


@dataclasses.dataclass(frozen=True)
class ParamOverride:
    path: str
    where: str  # "file.yaml line 12: ", prefixed to every error about this entry
    min: float | None = None
    max: float | None = None
    scale: str | None = None
    step: float | None = None
    values: tuple[Any, ...] | None = None
    weights: tuple[float, ...] | Mapping[Any, float] | None = None
    math_cond: str | None = None
    depends_on: str | None = None
    rule: str | None = None
    fractions: tuple[float, ...] | None = None
    epochs: str | None = None

    @property
    def source(self) -> str:
        return self.where.rstrip(": ")

    def merged_onto(self, base: ParamOverride) -> ParamOverride:
        given = {k: getattr(self, k) for k in PARAM_KEYS if getattr(self, k) is not None}
        kept = {k: getattr(base, k) for k in PARAM_KEYS if getattr(base, k) is not None}
        if "values" in given:  # new options: the base's range and weights no longer apply
            kept = {k: v for k, v in kept.items() if k not in RANGE_KEYS + CHOICE_KEYS}
        if any(k in given for k in RANGE_KEYS):
            kept = {k: v for k, v in kept.items() if k not in CHOICE_KEYS}
        where = f"{self.where.rstrip(': ')} over {base.source}: "
        return ParamOverride(self.path, where, **{**kept, **given})


@dataclasses.dataclass(frozen=True)
class FixedValue:
    path: str
    value: Any
    where: str


@dataclasses.dataclass(frozen=True)
class SpaceOverrides:
    """A resolved chain of space files (bases applied), ready for SearchSpace.build."""

    include_schema_defaults: bool = True
    parameters: Mapping[str, ParamOverride] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, FixedValue] = dataclasses.field(default_factory=dict)
    removed: Mapping[str, str] = dataclasses.field(default_factory=dict)  # path -> where
    files: tuple[str, ...] = ()
    description: str = ""


def load_space_overrides(path: str | Path | None) -> SpaceOverrides:
    """Load a space file and its bases; None gives the schema-derived space (no file)."""
    if path is None:
        return SpaceOverrides()
    return _load(Path(path), ())


def _load(path: Path, chain: tuple[Path, ...]) -> SpaceOverrides:
    resolved = path.resolve()
    if resolved in chain:
        names = " -> ".join(p.name for p in chain + (resolved,))
        raise ConfigError(f"space files form a base cycle: {names}")
    data, lines = _read_yaml(path)
    name = path.name

    def where(section: str, key: Any = None) -> str:
        line = lines.get((section, key)) or lines.get((section, None))
        return f"{name} line {line}: " if line else f"{name}: "

    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"{where(unknown[0])}unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), TOP_KEYS)}; "
            f"a space file has {', '.join(TOP_KEYS)}"
        )
    if "base" not in data:
        raise ConfigError(
            f"{name}: say what this space builds on with 'base:': 'schema' (the schema's "
            "automl_default_parameters), 'none' (only what this file lists) or another space "
            "file such as 'dino/default_space.yaml'"
        )
    base = data["base"]
    if base == "schema":
        result = SpaceOverrides(include_schema_defaults=True)
    elif base == "none" or base is None:
        result = SpaceOverrides(include_schema_defaults=False)
    elif isinstance(base, str):
        result = _load(_find_base(base, path, where("base")), chain + (resolved,))
    else:
        raise ConfigError(f"{where('base')}base must be 'schema', 'none' or a file path, got {base!r}")

    params = _section(data, "parameters", dict, where)
    fixed = _section(data, "fixed", dict, where)
    remove = _section(data, "remove", list, where)
    seen: dict[str, str] = {}
    for section, paths in (("parameters", params), ("fixed", fixed), ("remove", remove)):
        for key in paths:
            _check_path(key, where(section, key))
            if key in seen:
                raise ConfigError(f"{where(section, key)}{key} is also under '{seen[key]}'; keep one")
            seen[key] = section

    parameters = dict(result.parameters)
    fixed_values = dict(result.fixed)
    removed = dict(result.removed)
    for key, entry in params.items():
        override = _param_override(key, entry, where("parameters", key))
        parameters[key] = override.merged_onto(parameters[key]) if key in parameters else override
        fixed_values.pop(key, None)
        removed.pop(key, None)
    for key, value in fixed.items():
        parameters.pop(key, None)
        removed.pop(key, None)
        fixed_values[key] = FixedValue(key, value, where("fixed", key))
    for key in remove:
        parameters.pop(key, None)
        fixed_values.pop(key, None)
        removed[key] = where("remove", key).rstrip(": ")
    description = data.get("description") or result.description
    return SpaceOverrides(
        include_schema_defaults=result.include_schema_defaults,
        parameters=parameters,
        fixed=fixed_values,
        removed=removed,
        files=result.files + (str(path),),
        description=str(description or ""),
    )


def _read_yaml(path: Path) -> tuple[dict, dict[tuple[str, Any], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"space file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read space file {path}: {exc}") from None
    try:
        data = load_yaml(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"space file {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"space file {path}: expected a mapping at the top, got {type(data).__name__}")
    lines: dict[tuple[str, Any], int] = {}
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            section = key_node.value
            lines[(section, None)] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.MappingNode):
                for sub_key, _ in value_node.value:
                    lines[(section, sub_key.value)] = sub_key.start_mark.line + 1
            elif isinstance(value_node, yaml.SequenceNode):
                for item in value_node.value:
                    if isinstance(item, yaml.ScalarNode):
                        lines[(section, item.value)] = item.start_mark.line + 1
    return data, lines


def _find_base(base: str, path: Path, where: str) -> Path:
    candidates = [path.parent / base]
    try:
        candidates.append(search_spaces_dir() / base)
    except ConfigError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{where}base {base!r} not found (looked in {', '.join(map(str, candidates))})")


def _section(data: dict, key: str, kind: type, where) -> Any:
    value = data.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        expected = "a mapping of dotted paths" if kind is dict else "a list of dotted paths"
        raise ConfigError(f"{where(key)}'{key}' must be {expected}, got {type(value).__name__}")
    return value


def _check_path(key: Any, where: str) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"{where}{key!r} is not a dotted parameter path")
    try:
        parse_path(key)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _param_override(path: str, entry: Any, where: str) -> ParamOverride:
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}{path}: expected a mapping such as {{min: ..., max: ...}} or {{values: [...]}}; "
            f"to fix a value, put it under 'fixed:'"
        )
    for key in entry:
        if key not in PARAM_KEYS:
            raise ConfigError(
                f"{where}{path}: unknown key {key!r}{did_you_mean(str(key), PARAM_KEYS)}; "
                f"allowed: {', '.join(PARAM_KEYS)}"
            )
    kw: dict[str, Any] = {}
    for key in ("min", "max", "step"):
        if entry.get(key) is not None:
            kw[key] = _number(entry[key], f"{where}{path}: {key}")
    if kw.get("step") is not None and kw["step"] <= 0:
        raise ConfigError(f"{where}{path}: step must be positive, got {kw['step']:g}")
    if "min" in kw and "max" in kw and kw["min"] > kw["max"]:
        raise ConfigError(f"{where}{path}: min {kw['min']:g} is greater than max {kw['max']:g}")
    if entry.get("scale") is not None:
        if entry["scale"] not in ("log", "linear"):
            raise ConfigError(f"{where}{path}: scale must be 'log' or 'linear', got {entry['scale']!r}")
        kw["scale"] = entry["scale"]
    if entry.get("values") is not None:
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}{path}: values must be a non-empty list")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}{path}: values has duplicates: {values}")
        kw["values"] = tuple(values)
    if entry.get("weights") is not None:
        weights = entry["weights"]
        if isinstance(weights, dict):
            raw = list(weights.values())
        elif isinstance(weights, list):
            raw = weights
        else:
            raise ConfigError(f"{where}{path}: weights must be a list (one per value) or a mapping value -> weight")
        numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < math.inf for w in raw)
        if not numbers or not sum(raw) > 0:
            raise ConfigError(f"{where}{path}: weights must be numbers >= 0, not all zero; got {weights}")
        kw["weights"] = dict(weights) if isinstance(weights, dict) else tuple(float(w) for w in weights)
        if "values" in kw and isinstance(weights, list) and len(weights) != len(kw["values"]):
            raise ConfigError(f"{where}{path}: {len(weights)} weights for {len(kw['values'])} values")
    if entry.get("math_cond") is not None:
        try:
            parse_math_cond(entry["math_cond"])
        except MathCondError as exc:
            raise ConfigError(f"{where}{path}: {exc}") from None
        kw["math_cond"] = entry["math_cond"]
    for key in ("depends_on", "epochs"):
        if entry.get(key) is not None:
            _check_path(entry[key], f"{where}{path}: {key}: ")
            kw[key] = entry[key]
    if entry.get("rule") is not None:
        if entry["rule"] not in RULES:
            raise ConfigError(
                f"{where}{path}: unknown rule {entry['rule']!r}{did_you_mean(str(entry['rule']), RULES)}; "
                f"known: {', '.join(RULES)}"
            )
        kw["rule"] = entry["rule"]
    if entry.get("fractions") is not None:
        fr = entry["fractions"]
        if not isinstance(fr, list) or not fr or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fr
        ):
            raise ConfigError(f"{where}{path}: fractions must be a list of numbers in (0, 1], got {fr!r}")
        kw["fractions"] = tuple(float(f) for f in fr)
    if ("fractions" in kw or "epochs" in kw) and kw.get("rule") is None:
        raise ConfigError(f"{where}{path}: fractions/epochs belong to 'rule: epoch_fraction'")
    if "values" in kw and any(k in kw for k in ("min", "max", "step", "scale")):
        raise ConfigError(f"{where}{path}: give either values or a range (min/max/step/scale), not both")
    return ParamOverride(path, where, **kw)


def _number(value: Any, where: str) -> float:
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return value


def as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; take it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
