"""Build one :class:`Param` from a schema field, a space-file entry and the rules."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from automl.errors import ConfigError
from automl.search_space.math_cond import Clause, MathCond, MathCondError, parse_math_cond
from automl.search_space.overrides import ParamOverride, as_number
from automl.search_space.params import (
    ChoiceParam,
    DynamicBound,
    EpochStepsParam,
    NumberParam,
    Param,
)
from automl.search_space.rules import choose_range, choose_scale, next_above, next_below, valid_interval
from automl.search_space.schema import SchemaField, TrainSchema, leaf_problem

MAX_ENUMERATED = 1000  # an int range with a hole ('!= x') is listed as options up to this size
DINO_STEP_FRACTIONS = (11 / 12,)  # DINO's 12-epoch schedule decays the rate at epoch 11


def make_param(schema: TrainSchema, path: str, override: ParamOverride | None, source: str) -> Param:
    # the field under the caller's path: an indexed path (a[0].b) names the item it tunes
    field = dataclasses.replace(schema.field(path, override.where if override else ""), path=path)
    ov = override or ParamOverride(path, f"{schema.source}: field ")
    where = ov.where
    if field.unsupported is not None:
        raise ConfigError(
            f"{where}{path} cannot be tuned: its entry in {schema.source} cannot be interpreted "
            f"({field.unsupported}); fix that entry, or set a value for every trial with fixed:"
        )
    depends_on = ov.depends_on or field.depends_on
    cond = _condition(field, ov, where)
    if depends_on is not None:
        schema.field(depends_on, f"{where}{path}: depends_on ")
    if cond is not None and cond.relative and depends_on is None:
        raise ConfigError(f"{where}{path}: math_cond {cond.text!r} needs depends_on")

    if ov.rule == "epoch_fraction":
        return _epoch_steps(schema, field, ov, source)
    if ov.values is not None:
        values = tuple(coerce(field, v) for v in ov.values)
        for v in values:
            problem = leaf_problem(field, v)
            if problem:
                raise ConfigError(f"{where}{path}: value {problem}")
        return _choice(field, values, ov.weights, where, source, cond)
    if field.type == "bool":
        return _choice(field, (False, True), ov.weights, where, source, cond, kind="bool")
    if field.enum is not None and field.type != "list":  # a list's enum lists its items
        weights = ov.weights if ov.weights is not None else field.option_weights
        if ov.weights is None and field.option_weights is not None:
            source += "; option_weights from the schema"
        return _choice(field, field.enum, weights, where, source, cond)
    if field.type in ("int", "float"):
        return _number(field, ov, cond, depends_on, where, source)
    raise ConfigError(
        f"{where}{path} is a {field.type}: to tune it give 'values: [...]' (the options) "
        "or, for lr_steps-like lists, 'rule: epoch_fraction'"
    )


def coerce(field: SchemaField, value: Any) -> Any:
    """Numbers written as strings (YAML's ``1e-5``) and whole floats for int fields."""
    if field.is_numeric:
        value = as_number(value)
        if field.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
    return value


def _condition(field: SchemaField, ov: ParamOverride, where: str) -> MathCond | None:
    if ov.math_cond is None:
        return field.math_cond
    try:
        return parse_math_cond(ov.math_cond)
    except MathCondError as exc:  # already checked when the file was read
        raise ConfigError(f"{where}{field.path}: {exc}") from None


def _choice(
    field: SchemaField,
    choices: tuple[Any, ...],
    raw_weights: Any,
    where: str,
    source: str,
    cond: MathCond | None,
    kind: str | None = None,
) -> ChoiceParam:
    if cond is not None and cond.relative:
        raise ConfigError(
            f"{where}{field.path}: options cannot follow '{cond.text}' on {field.depends_on}; "
            "give it a range (min/max) instead of values"
        )
    weights = _weights(raw_weights, choices, where, field.path)
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
    ordered = numeric and len(choices) > 2
    if ordered:  # the index encodes order, so options go low to high
        order = sorted(range(len(choices)), key=lambda i: choices[i])
        choices = tuple(choices[i] for i in order)
        weights = tuple(weights[i] for i in order) if weights else None
    if kind is None:
        kind = ("weighted " if weights else "") + (f"ordered {field.type}" if ordered else "choice")
    return ChoiceParam(field.path, kind, source, choices=choices, weights=weights, ordered=ordered)


def _weights(raw: Any, choices: tuple[Any, ...], where: str, path: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        by_text = {str(k): w for k, w in raw.items()}
        unknown = [k for k in by_text if k not in map(str, choices)]
        missing = [c for c in choices if str(c) not in by_text]
        if unknown or missing:
            raise ConfigError(
                f"{where}{path}: weights must name each option once; "
                f"unknown {unknown}, missing {missing} (options: {list(choices)})"
            )
        return tuple(float(by_text[str(c)]) for c in choices)
    if len(raw) != len(choices):
        raise ConfigError(f"{where}{path}: {len(raw)} weights for {len(choices)} options {list(choices)}")
    return tuple(float(w) for w in raw)


def _number(
    field: SchemaField,
    ov: ParamOverride,
    cond: MathCond | None,
    depends_on: str | None,
    where: str,
    source: str,
) -> Param:
    kind, path = field.type, field.path
    valid = valid_interval(field, cond.comparisons if cond is not None else ())
    rng = choose_range(field, kind, valid, coerce(field, ov.min), coerce(field, ov.max), where)
    low, high = rng.low, rng.high
    if rng.notes:
        source += "; " + "; ".join(rng.notes)
    conditions = [c.describe() for c in cond.clauses if not c.relative] if cond is not None else []
    step = ov.step
    multiple = cond.step if cond is not None else None
    if multiple is not None:
        if step is not None and not math.isclose(step / multiple, round(step / multiple)):
            raise ConfigError(f"{where}{path}: step {step:g} is not a multiple of {multiple:g} ('{cond.text}')")
        step = step or multiple
    if kind == "int" and step is not None:
        if step != int(step):
            raise ConfigError(f"{where}{path}: an int's step must be a whole number, got {step:g}")
        step = int(step)

    base = cond.power_base if cond is not None else None
    if base is not None:
        return _powers(field, base, low, high, depends_on, where, source)
    holes = cond.excluded if cond is not None else ()
    if holes and kind == "int":
        while low in holes or high in holes:  # a hole at an end just moves that end
            low, high = (low + 1 if low in holes else low), (high - 1 if high in holes else high)
        if any(low < h < high for h in holes):
            options = tuple(x for x in range(int(low), int(high) + 1) if x not in holes)
            if len(options) > MAX_ENUMERATED:
                raise ConfigError(
                    f"{where}{path}: '{cond.text}' splits [{low}, {high}] in two; restrict min/max "
                    "to one side of it in the space file"
                )
            return ChoiceParam(path, f"ordered {kind}", source, choices=options, ordered=True)
    if step is not None:
        low = math.ceil(round(low / step, 9)) * step
        high = math.floor(round(high / step, 9)) * step
        if low > high:
            raise ConfigError(f"{where}{path}: no multiple of {step:g} lies in [{rng.low:g}, {rng.high:g}]")
    log, scale_rule = choose_scale(path, kind, low, high, ov.scale, where)
    if step is not None and log:
        if ov.scale == "log":
            raise ConfigError(f"{where}{path}: a stepped range (multiple of {step:g}) cannot be log scale")
        log, scale_rule = False, "stepped"

    bounds: tuple[DynamicBound, ...] = ()
    relative = cond.relative_clause if cond is not None else None
    if relative is not None:
        bounds = (_relative_bound(kind, relative, cond.text, depends_on, where, path),)
    return NumberParam(
        path, kind, source, low=low, high=high, log=log, step=step, scale_rule=scale_rule,
        open_low=rng.open_low and step is None, open_high=rng.open_high and step is None,
        conditions=tuple(conditions), bounds=bounds,
    )  # fmt: skip


def _relative_bound(kind: str, clause: Clause, text: str, parent: str, where: str, path: str) -> DynamicBound:
    op = clause.op
    if op == "!=":
        raise ConfigError(f"{where}{path}: '!= depends_on' cannot be sampled; use < or > instead")
    if op == ">":
        return DynamicBound("low", (parent,), lambda v: next_above(v(parent), kind), f"> {parent}", text)
    if op == ">=":
        return DynamicBound("low", (parent,), lambda v: v(parent), f">= {parent}", text)
    if op == "<":
        return DynamicBound("high", (parent,), lambda v: next_below(v(parent), kind), f"< {parent}", text)
    return DynamicBound("high", (parent,), lambda v: v(parent), f"<= {parent}", text)


def _powers(
    field: SchemaField, base: int, low: float, high: float, depends_on: str | None, where: str, source: str
) -> ChoiceParam:
    if low <= 0:
        low = 1 if field.type == "int" else low
    k_low = math.ceil(math.log(max(low, 1e-300), base) - 1e-9)
    k_high = math.floor(math.log(high, base) + 1e-9) if high > 0 else k_low - 1
    if field.type == "int":
        k_low = max(k_low, 0)
    choices = tuple((base**k if k >= 0 else float(base) ** k) for k in range(k_low, k_high + 1))
    choices = tuple(c for c in choices if low <= c <= high)
    if not choices:
        raise ConfigError(f"{where}{field.path}: no power of {base} lies in [{low:g}, {high:g}]")
    if len(choices) == 1:
        source += f"; only {choices[0]} is a power of {base} in range"
    return ChoiceParam(field.path, f"power of {base}", source, choices=choices, ordered=True)


def _epoch_steps(schema: TrainSchema, field: SchemaField, ov: ParamOverride, source: str) -> EpochStepsParam:
    where, path = ov.where, field.path
    if field.type != "list":
        raise ConfigError(f"{where}{path}: rule epoch_fraction makes a list, but {path} is a {field.type}")
    epochs = ov.epochs or "train.num_epochs"
    epochs_field = schema.field(epochs, f"{where}{path}: epochs ")
    if epochs_field.type != "int":
        raise ConfigError(f"{where}{path}: epochs must name an int field, {epochs} is a {epochs_field.type}")
    low = high = None
    fractions: tuple[float, ...] = ()
    if ov.fractions is not None:
        if ov.min is not None or ov.max is not None:
            raise ConfigError(f"{where}{path}: give fractions (fixed) or min/max (sampled), not both")
        fractions = ov.fractions
    elif ov.min is not None or ov.max is not None:
        low, high = ov.min, ov.max
        if low is None or high is None or not 0 < low <= high <= 1:
            raise ConfigError(f"{where}{path}: epoch_fraction needs 0 < min <= max <= 1, got {low}, {high}")
    else:
        fractions = DINO_STEP_FRACTIONS
        source += "; fraction 11/12 as in DINO's 12-epoch schedule"
    return EpochStepsParam(
        path, "list (rule)", source, epochs_path=epochs, fractions=fractions, low=low, high=high
    )
