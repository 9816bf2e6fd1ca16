"""The pruners a run config can name, one settings model each (Katib validates early
stopping per algorithm the same way): ``{name: median, patience: 5}`` is an error
naming ``patience``, since the median rule has no patience.

Every pruner counts its warm-up in ``warmup_epochs``, validations reported before the
first decision. Defaults come from measured curves: epoch 1 is noise and single curves
dip by 0.1-0.3 between epochs, so nothing is pruned before two validations and our
rules judge a trial by its best value so far.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import optuna
from optuna.pruners import BasePruner
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from automl.tuning.pruners._any import AnyPruner
from automl.tuning.pruners._base import PrunerOptions
from automl.tuning.pruners._best_so_far import BestSoFarPercentilePruner
from automl.tuning.pruners._not_learning import NotLearningPruner


class _Warmup(PrunerOptions):
    warmup_epochs: int = Field(2, ge=0)  # validations reported before any pruning decision

    @property
    def optuna_warmup_steps(self) -> int:
        """Optuna's ``n_warmup_steps`` (a step index) for the same warm-up: epochs are
        reported as steps from 0, so after N epochs the last step is N - 1."""
        return max(0, self.warmup_epochs - 1)


class Median(_Warmup):
    """``median``: prune a trial whose best value so far is below the median of the other
    trials' best values so far at the same epoch."""

    startup_trials: int = Field(1, ge=0)  # finished trials needed before pruning others
    min_trials: int = Field(1, ge=1)  # reference trials that must have reached the epoch
    include_pruned: bool = True  # pruned trials that reached the epoch are references too

    def _rule(self, percentile: float) -> BestSoFarPercentilePruner:
        return BestSoFarPercentilePruner(
            percentile=percentile, warmup_epochs=self.warmup_epochs, n_startup_trials=self.startup_trials,
            n_min_trials=self.min_trials, include_pruned=self.include_pruned,
        )  # fmt: skip

    def build(self, **context: Any) -> BasePruner:
        return self._rule(50.0)


class Percentile(Median):
    """``percentile``: the median rule at another percentile (25 keeps the top 75 %)."""

    percentile: float = Field(50.0, gt=0, lt=100)

    def build(self, **context: Any) -> BasePruner:
        return self._rule(self.percentile)


class Patient(_Warmup):
    """``patient``: Optuna's PatientPruner around the median rule: a trial survives
    ``patience`` epochs without improving by ``min_delta`` before the rule may judge it."""

    startup_trials: int = Field(1, ge=0)
    patience: int = Field(2, ge=0)
    min_delta: float = Field(0.0, ge=0)

    def build(self, **context: Any) -> BasePruner:
        inner = BestSoFarPercentilePruner(warmup_epochs=self.warmup_epochs, n_startup_trials=self.startup_trials)
        return optuna.pruners.PatientPruner(inner, patience=self.patience, min_delta=self.min_delta)


class SuccessiveHalving(_Warmup):
    """``successive_halving``: Optuna's asynchronous successive halving (ASHA); the first
    rung is at ``warmup_epochs`` (at least 1)."""

    reduction_factor: int = Field(3, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)

    def build(self, **context: Any) -> BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, self.warmup_epochs), reduction_factor=self.reduction_factor,
            min_early_stopping_rate=self.min_early_stopping_rate, bootstrap_count=self.bootstrap_count,
        )  # fmt: skip


class Hyperband(_Warmup):
    """``hyperband``: Optuna's Hyperband over successive-halving brackets from
    ``warmup_epochs`` (at least 1) to ``max_resource`` epochs."""

    reduction_factor: int = Field(3, ge=2)
    max_resource: int | Literal["auto"] = "auto"
    bootstrap_count: int = Field(0, ge=0)

    def build(self, **context: Any) -> BasePruner:
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, self.warmup_epochs), max_resource=self.max_resource,
            reduction_factor=self.reduction_factor, bootstrap_count=self.bootstrap_count,
        )  # fmt: skip


class Threshold(_Warmup):
    """``threshold``: prune a trial whose value leaves [lower, upper] after the warm-up."""

    lower: float | None = None
    upper: float | None = None
    interval_steps: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _a_bound(self) -> Threshold:
        if self.lower is None and self.upper is None:
            raise ValueError("pruner 'threshold' needs pruner.lower or pruner.upper")
        return self

    def build(self, **context: Any) -> BasePruner:
        return optuna.pruners.ThresholdPruner(
            lower=self.lower, upper=self.upper, n_warmup_steps=self.optuna_warmup_steps,
            interval_steps=self.interval_steps,
        )  # fmt: skip


class NoPruning(PrunerOptions):
    """``none``: every trial runs all its epochs."""

    def build(self, **context: Any) -> BasePruner:
        return optuna.pruners.NopPruner()


class NotLearning(_Warmup):
    """``not_learning``: prune a trial whose best value so far is still below ``min_value``
    after the warm-up, unless its last epoch rose by ``min_rise`` or more; no reference
    trials needed (:mod:`._not_learning`). Maximised metrics only.

    Defaults from the recorded curves (``gpu_smoke_main.h200.json``, DESIGN.md): after 2
    epochs every DINO R50 trial that went on to learn was at val_mAP50 >= 0.028 (RT-DETR's
    slowest learner, lr 2e-5: 0.024), every one that never learned at <= 0.003 (its best
    over 10 epochs: 0.0084; its largest gain in one epoch: 0.0038, below ``min_rise``).
    """

    min_value: float = Field(0.01, gt=0)
    min_rise: float = Field(0.005, ge=0)

    def check_direction(self, direction: Literal["maximize", "minimize"]) -> None:
        if direction != "maximize":
            raise ValueError("rule 'not_learning' judges maximised metrics that start at zero (mAP, recall); "
                             "for a minimised metric use 'threshold' with upper=, or 'median'")

    def build(self, **context: Any) -> BasePruner:
        return NotLearningPruner(warmup_epochs=self.warmup_epochs, min_value=self.min_value, min_rise=self.min_rise)


class _Rule(BaseModel):
    """One rule of an ``any`` pruner: a pruner name and its options, validated by it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    options: SerializeAsAny[BaseModel]


class AnyOf(PrunerOptions):
    """``any``: several rules, a trial is pruned when any one says so (:mod:`._any`).

    ``pruner: {name: any, rules: [{name: not_learning}, {name: median, startup_trials: 2}]}``;
    each rule is any pruner name (or ``module:Class``) with its own options beside it,
    checked by that pruner: ``pruner.rules[1].patience`` is an error if rule 1 is median.
    """

    rules: tuple[_Rule, ...] = Field(min_length=1)

    @field_validator("rules", mode="before")
    @classmethod
    def _validate_each(cls, value: Any) -> Any:
        from automl.tuning.pruners import PRUNERS  # the family this model belongs to

        if not isinstance(value, (list, tuple)):
            raise ValueError(f"rules must be a list of pruners such as [{{name: not_learning}}, "
                             f"{{name: median}}], got {value!r}")
        rules = []
        for i, raw in enumerate(value):
            if isinstance(raw, _Rule):
                rules.append(raw)
                continue
            if isinstance(raw, str):
                raw = {"name": raw}
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise ValueError(f"rule {i} must be a mapping with a name, e.g. {{name: median}}; got {raw!r}")
            options = dict(raw)
            name = options.pop("name")
            rules.append(_Rule(name=name, options=PRUNERS.validate(name, options, where=f"pruner.rules[{i}]",
                                                                      name_where=f"pruner.rules[{i}].name")))
        return tuple(rules)

    def check_direction(self, direction: Literal["maximize", "minimize"]) -> None:
        for i, rule in enumerate(self.rules):
            if isinstance(rule.options, PrunerOptions):
                try:
                    rule.options.check_direction(direction)
                except ValueError as exc:
                    raise ValueError(f"rules[{i}]: {exc}") from None

    def build(self, **context: Any) -> BasePruner:
        from automl.tuning.pruners import PRUNERS

        return AnyPruner([(rule.name, PRUNERS.build(rule.name, rule.options)) for rule in self.rules])
