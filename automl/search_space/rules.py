"""The documented rules that turn a schema field into a finite, well-scaled range.

TAO's own AutoML draws floats uniformly from [minimum, maximum] (so ``lr`` from [0, 1]),
replaces an infinite maximum by the default (the parameter is then not tuned at all) and
tunes resource settings such as ``dataset.workers``. Ours:

- **Not tuned by default**: resource settings (:data:`RESOURCE_SETTINGS`). They change
  speed or memory, not the model; a space file can still add them.
- **Rate window**: a float whose name says it is a rate, decay or multiplier (:data:`RATE_NAME`)
  with a positive default is searched within two decades either side of its default,
  intersected with the schema's limits: ``lr`` (default 2e-4, schema [0, 1]) gets
  [2e-6, 2e-2].
- **Span rule** for a missing or infinite limit of any other number: TAO's int rule,
  ``[default // 2, default * 2]`` (``default / 2`` for floats), clipped to the schema.
  A field with no usable default (<= 0) and no limit must be given one in a space file.
- **Open bounds**: ``> x`` / ``< x`` exclude the limit (next int, or next float).
- **Log scale** for a rate/decay spanning at least one decade, and for an int spanning at
  least two decades (``lr_step_size`` in [1, 10000]); linear otherwise. A space file's
  ``scale:`` wins. The listing names the rule that chose.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable

from automl.errors import ConfigError
from automl.search_space.math_cond import Clause
from automl.search_space.schema import SchemaField

RATE_NAME = re.compile(r"(^|_)(lr|learning_rate|rate|decay|mult)(_|$)")
RATE_WINDOW = 100.0  # two decades either side of the default
SPAN_FACTOR = 2  # [default / 2, default * 2] where a limit is missing
LOG_RATE_MIN_RATIO = 10.0  # a rate spanning >= one decade is searched in log space
LOG_INT_MIN_RATIO = 100.0  # an int spanning >= two decades too

_RESOURCE = "resource setting: changes speed or memory, not the model"
RESOURCE_SETTINGS: dict[str, str] = {
    "workers": _RESOURCE,
    "num_workers": _RESOURCE,
    "pin_memory": _RESOURCE,
    "num_gpus": "resource setting: devices are chosen by the run, not by the search",
    "gpu_ids": "resource setting: devices are chosen by the run, not by the search",
    "num_nodes": "resource setting: devices are chosen by the run, not by the search",
    "batch_size": "resource setting: bounded by GPU memory (CUDA OOM) and it changes the "
    "steps per epoch that pruning compares; add it in a space file to tune it",
    "precision": _RESOURCE,
    "activation_checkpoint": _RESOURCE,
    "distributed_strategy": _RESOURCE,
    "cudnn": _RESOURCE,
}


def not_tuned_reason(path: str) -> str | None:
    """Why a schema default parameter stays out of the space, or None."""
    for name in path.split("."):
        if name in RESOURCE_SETTINGS:
            return RESOURCE_SETTINGS[name]
    return None


def is_rate_like(path: str) -> bool:
    return RATE_NAME.search(path.rsplit(".", 1)[-1]) is not None


@dataclasses.dataclass(frozen=True)
class Interval:
    """The values a schema allows: limits, and whether each limit itself is excluded."""

    low: float | None
    high: float | None
    low_open: bool = False
    high_open: bool = False

    def contains(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return not (self.high is not None and (x > self.high or (self.high_open and x == self.high)))

    def text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


def valid_interval(field: SchemaField, comparisons: Iterable[Clause] = ()) -> Interval:
    """Schema limits (``exclusiveMinimum``/``exclusiveMaximum`` exclude them) tightened by
    absolute comparisons of its ``math_cond`` (``> 0.0`` excludes 0; ``> 0.0 <= 1.0`` both)."""
    low = None if field.minimum in (None, -math.inf) else field.minimum
    high = None if field.maximum in (None, math.inf) else field.maximum
    low_open = low is not None and field.exclusive_minimum
    high_open = high is not None and field.exclusive_maximum
    for c in comparisons:
        value = c.operand
        if c.op in (">", ">=") and (low is None or value > low or (value == low and c.op == ">")):
            low, low_open = value, c.op == ">"
        if c.op in ("<", "<=") and (high is None or value < high or (value == high and c.op == "<")):
            high, high_open = value, c.op == "<"
    return Interval(low, high, low_open, high_open)


@dataclasses.dataclass(frozen=True)
class RangeChoice:
    low: float
    high: float
    notes: tuple[str, ...]  # which rule chose each limit, for the listing
    open_low: bool = False  # low is the next float above an excluded limit
    open_high: bool = False


def choose_range(
    field: SchemaField,
    kind: str,
    valid: Interval,
    min_override: float | None,
    max_override: float | None,
    where: str,
) -> RangeChoice:
    """A finite search range inside ``valid``: the space file's limits, else our rules."""
    path = field.path
    for label, value in (("min", min_override), ("max", max_override)):
        if value is not None and not valid.contains(value):
            raise ConfigError(
                f"{where}{path}: {label} {value:g} is outside what the schema allows, {valid.text()}"
            )
    default = field.default
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not math.isfinite(default):
        default = None
    notes: list[str] = []
    low, high = min_override, max_override
    if kind == "float" and is_rate_like(path) and default is not None and default > 0:
        if low is None:
            low = _clip(default / RATE_WINDOW, valid)
            notes.append(f"min {low:.3g}: rate rule, default/{RATE_WINDOW:g}{_clipped(low, default / RATE_WINDOW)}")
        if high is None:
            high = _clip(default * RATE_WINDOW, valid)
            wanted = default * RATE_WINDOW
            notes.append(f"max {high:.3g}: rate rule, default x {RATE_WINDOW:g}{_clipped(high, wanted)}")
    # TAO's int rule, kept and extended to floats: an unbounded field is searched around its
    # default; a finite schema limit on the other side is a validity limit, not a search
    # boundary (num_queries >= 1 must not mean "try 1 query")
    unbounded = valid.high is None or valid.low is None
    if unbounded and (low is None or high is None):
        span_low, span_high = _span(default, kind, where, path, valid)
        why = "schema has Infinity" if field.maximum == math.inf else (
            "schema has no maximum" if valid.high is None else "schema has no minimum")
        if low is None:
            low = _clip(span_low, valid)
            notes.append(f"min {low:g}: span rule, default/{SPAN_FACTOR} ({why})" + _clipped(low, span_low))
        if high is None:
            high = _clip(span_high, valid) if valid.high is None else valid.high
            if valid.high is None:
                notes.append(f"max {high:g}: span rule, default x {SPAN_FACTOR} ({why})")
    if low is None:
        low = valid.low
    if high is None:
        high = valid.high
    # an excluded limit (from '> 0.0' or '< x') becomes the nearest allowed value
    open_low = low == valid.low and valid.low_open
    open_high = high == valid.high and valid.high_open
    if open_low:
        low = next_above(low, kind)
    if open_high:
        high = next_below(high, kind)
    if kind == "int":
        low, high = math.ceil(low), math.floor(high)
    if low > high:
        chosen = f" ({'; '.join(notes)})" if notes else ""
        raise ConfigError(
            f"{where}{path}: min {low:g} is greater than max {high:g}{chosen}; "
            "give both min and max, with min <= max"
        )
    floats = kind == "float"
    return RangeChoice(low, high, tuple(notes), open_low and floats, open_high and floats)


def choose_scale(path: str, kind: str, low: float, high: float, override: str | None, where: str) -> tuple[bool, str]:
    """(log?, the rule that chose). Log needs low > 0."""
    if override is not None:
        if override == "log" and low <= 0:
            raise ConfigError(f"{where}{path}: scale log needs min > 0, got min {low:g}")
        return override == "log", "space file"
    if low <= 0:
        return False, "range includes 0"
    decades = math.log10(high / low)
    if kind == "float" and is_rate_like(path):
        if high / low >= LOG_RATE_MIN_RATIO:
            return True, f"rate/decay over {decades:.1f} decades"
        return False, "rate/decay within one decade"
    if kind == "int" and low >= 1 and high / low >= LOG_INT_MIN_RATIO:
        return True, f"int over {decades:.1f} decades"
    return False, ""


def next_above(x: float, kind: str) -> float:
    return x + 1 if kind == "int" else math.nextafter(x, math.inf)


def next_below(x: float, kind: str) -> float:
    return x - 1 if kind == "int" else math.nextafter(x, -math.inf)


def _span(default: float | None, kind: str, where: str, path: str, valid: Interval) -> tuple[float, float]:
    if default is None or default <= 0:
        what = "finite maximum" if valid.high is None else "minimum"
        raise ConfigError(
            f"{where}{path}: the schema gives no {what} and its default ({default!r}) gives no "
            "span to search; set min and max for it in the space file"
        )
    if kind == "int":
        return default // SPAN_FACTOR, default * SPAN_FACTOR
    return default / SPAN_FACTOR, default * SPAN_FACTOR


def _clip(x: float, valid: Interval) -> float:
    if valid.low is not None and x < valid.low:
        return valid.low
    if valid.high is not None and x > valid.high:
        return valid.high
    return x


def _clipped(value: float, wanted: float) -> str:
    return "" if value == wanted else " (clipped to the schema's limit)"
