"""One tunable (or fixed, or derived) entry of a search space and how it asks Optuna.

A parameter's Optuna name is its dotted path whenever the value Optuna records is the
value the spec gets (floats, ints, bools, plain categoricals). Three kinds need an
encoding, named ``<path>:<what>``, and their decoded value is stored as the trial user
attribute ``<path>`` so the dashboard still shows it:

- weighted choice ``<path>:u``: Optuna has no weighted categorical, so a uniform float in
  [0, 1) is mapped through the cumulative weights (random sampling then follows the
  weights exactly, and TPE/GP still learn which part of [0, 1) is good);
- ordered choice ``<path>:index``: numeric options in order, sampled as an int index so
  TPE and GP see that 300 lies between 100 and 900;
- epoch-fraction lists ``<path>:fraction``: ``lr_steps = [round(f * num_epochs)]``.

``values`` passed to ``suggest`` looks up parents: this trial's earlier parameters, then
the run context, then schema defaults.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Callable, Protocol

from automl.errors import ConfigError

Lookup = Callable[[str], Any]


class TrialLike(Protocol):
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...  # fmt: skip
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class DynamicBound:
    """A bound that depends on other parameters' values (``> depends_on``, DINO's cap)."""

    side: str  # "low" | "high"; the bound is inclusive
    needs: tuple[str, ...]
    fn: Callable[[Lookup], float]
    text: str  # for the listing, e.g. "> dataset.augmentation.train_random_crop_min"
    source: str


@dataclasses.dataclass
class Param:
    path: str
    kind: str  # label for the listing: float, int, bool, choice, ordered int, ...
    source: str  # which file or rule put it in the space and chose its range

    def parents(self) -> tuple[str, ...]:
        return ()

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, values: Lookup) -> dict[str, Any]:
        """Optuna params that make ``suggest`` return ``value`` (for enqueue_trial)."""
        return {self.path: value}

    def row(self) -> dict[str, str]:
        return {"parameter": self.path, "type": self.kind, "range": "", "scale": "",
                "condition": "", "source": self.source}  # fmt: skip


@dataclasses.dataclass
class NumberParam(Param):
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    step: float | None = None  # int: multiple of step; float: grid of step
    scale_rule: str = ""
    open_low: bool = False  # float low/high are the next float past an excluded limit
    open_high: bool = False
    conditions: tuple[str, ...] = ()  # static conditions, for the listing
    bounds: tuple[DynamicBound, ...] = ()

    def parents(self) -> tuple[str, ...]:
        return tuple(p for b in self.bounds for p in b.needs)

    def effective_range(self, values: Lookup) -> tuple[float, float]:
        low, high = self.low, self.high
        for bound in self.bounds:
            value = bound.fn(values)
            low, high = (max(low, value), high) if bound.side == "low" else (low, min(high, value))
        if self.step:
            low = math.ceil(round(low / self.step, 9)) * self.step
            high = math.floor(round(high / self.step, 9)) * self.step
        if self.kind == "int":
            low, high = math.ceil(low), math.floor(high)
        return low, high

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        low, high = self.effective_range(values)
        if low > high:
            conds = ", ".join(b.text for b in self.bounds)
            raise ConfigError(
                f"{self.path}: no value fits [{low}, {high}] given {conds}; "
                "widen its range or narrow its parent's in the space file"
            )
        if self.kind == "int":
            return trial.suggest_int(self.path, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, float(low), float(high), step=self.step, log=self.log)

    def row(self) -> dict[str, str]:
        row = super().row()
        lo = f"({_fmt(math.nextafter(self.low, -math.inf))}" if self.open_low else f"[{_fmt(self.low)}"
        hi = f"{_fmt(math.nextafter(self.high, math.inf))})" if self.open_high else f"{_fmt(self.high)}]"
        row["range"] = f"{lo}, {hi}" + (
            f" step {_fmt(self.step)}" if self.step else ""
        )
        row["scale"] = ("log" if self.log else "linear") + (f" ({self.scale_rule})" if self.scale_rule else "")
        row["condition"] = "; ".join(list(self.conditions) + [b.text for b in self.bounds])
        return row


@dataclasses.dataclass
class ChoiceParam(Param):
    choices: tuple[Any, ...] = ()
    weights: tuple[float, ...] | None = None
    ordered: bool = False

    def __post_init__(self) -> None:
        if self.weights is not None:
            total = sum(self.weights)
            self._cumulative = [sum(self.weights[: i + 1]) / total for i in range(len(self.weights))]

    @property
    def encoding(self) -> str:
        if self.weights is not None:
            return "u"
        if self.ordered or not all(_is_primitive(c) for c in self.choices):
            return "index"
        return ""

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        enc = self.encoding
        if enc == "":
            return trial.suggest_categorical(self.path, list(self.choices))
        if enc == "u":
            u = trial.suggest_float(f"{self.path}:u", 0.0, 1.0)
            value = self.choices[self.index_of_u(u)]
        elif self.ordered:
            value = self.choices[trial.suggest_int(f"{self.path}:index", 0, len(self.choices) - 1)]
        else:
            index = trial.suggest_categorical(f"{self.path}:index", list(range(len(self.choices))))
            value = self.choices[index]
        trial.set_user_attr(self.path, value)
        return value

    def index_of_u(self, u: float) -> int:
        """The option whose cumulative-weight interval holds ``u`` (zero weights never win)."""
        last = max(i for i, w in enumerate(self.weights) if w > 0)
        return min(bisect.bisect_right(self._cumulative, u), last)

    def encode(self, value: Any, values: Lookup) -> dict[str, Any]:
        if value not in self.choices:
            raise ConfigError(f"{self.path}: {value!r} is not one of {list(self.choices)}")
        i = self.choices.index(value)
        enc = self.encoding
        if enc == "u":
            if self.weights[i] == 0:
                raise ConfigError(f"{self.path}: {value!r} has weight 0, it is never sampled")
            lo = self._cumulative[i - 1] if i else 0.0
            return {f"{self.path}:u": (lo + self._cumulative[i]) / 2}
        if enc == "index":
            return {f"{self.path}:index": i}
        return {self.path: value}

    def row(self) -> dict[str, str]:
        row = super().row()
        if self.weights is not None:
            total = sum(self.weights)
            row["range"] = "{" + ", ".join(
                f"{_fmt(c)}: {w / total:.2f}" for c, w in zip(self.choices, self.weights)
            ) + "}"
            row["scale"] = "weighted"
        else:
            row["range"] = "{" + ", ".join(_fmt(c) for c in self.choices) + "}"
            row["scale"] = "ordered" if self.ordered else "categorical"
        return row


@dataclasses.dataclass
class FixedParam(Param):
    value: Any = None

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        return self.value

    def encode(self, value: Any, values: Lookup) -> dict[str, Any]:
        return {}

    def row(self) -> dict[str, str]:
        row = super().row()
        row["range"] = f"= {_fmt(self.value)}"
        return row


@dataclasses.dataclass
class DerivedParam(Param):
    """A value computed from other parameters each trial (DINO's num_select cap)."""

    needs: tuple[str, ...] = ()
    fn: Callable[[Lookup], Any] = lambda values: None
    formula: str = ""

    def parents(self) -> tuple[str, ...]:
        return self.needs

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        return self.fn(values)

    def encode(self, value: Any, values: Lookup) -> dict[str, Any]:
        return {}

    def row(self) -> dict[str, str]:
        row = super().row()
        row["range"] = f"= {self.formula}"
        row["condition"] = "after " + ", ".join(self.needs)
        return row


@dataclasses.dataclass
class EpochStepsParam(Param):
    """``lr_steps`` as fractions of the epoch count: ``[round(f * num_epochs)]``.

    Either fixed ``fractions`` (a multi-step schedule that scales with the epochs) or one
    fraction sampled from ``[low, high]``. Steps are clamped to ``[1, num_epochs - 1]``
    so the decay happens inside training; DINO's 12-epoch schedule decays at 11/12.
    """

    epochs_path: str = "train.num_epochs"
    fractions: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None

    def parents(self) -> tuple[str, ...]:
        return (self.epochs_path,)

    def suggest(self, trial: TrialLike, values: Lookup) -> Any:
        fractions = self.fractions
        if self.low is not None:
            fractions = (trial.suggest_float(f"{self.path}:fraction", self.low, self.high),)
        value = self.steps(fractions, values(self.epochs_path))
        if self.low is not None:
            trial.set_user_attr(self.path, value)
        return value

    @staticmethod
    def steps(fractions: tuple[float, ...], epochs: int) -> list[int]:
        last = max(1, int(epochs) - 1)
        return sorted({min(max(1, round(f * epochs)), last) for f in fractions})

    def encode(self, value: Any, values: Lookup) -> dict[str, Any]:
        epochs = values(self.epochs_path)
        if self.low is None:
            return {}
        if not isinstance(value, list) or len(value) != 1:
            raise ConfigError(f"{self.path}: expected one step like [9], got {value!r}")
        fraction = min(max(value[0] / epochs, self.low), self.high)
        if self.steps((fraction,), epochs) != value:
            raise ConfigError(
                f"{self.path}: {value} is not round(f x {epochs}) for f in [{self.low:g}, {self.high:g}]"
            )
        return {f"{self.path}:fraction": fraction}

    def row(self) -> dict[str, str]:
        row = super().row()
        if self.low is None:
            row["range"] = "= [" + ", ".join(f"round({f:.3g} x {self.epochs_path})" for f in self.fractions) + "]"
        else:
            row["range"] = f"= [round(f x {self.epochs_path})], f in [{_fmt(self.low)}, {_fmt(self.high)}]"
        row["condition"] = f"after {self.epochs_path}; steps within [1, epochs-1]"
        return row


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
