"""Tonight's study starts where the previous nights left off.

Previous nights are the studies ``<base>-YYYYMMDD`` in the same storage with an earlier
date. From their completed trials (seeded ones excluded, so nothing is counted twice):

- the ``top_k`` best distinct parameter sets are enqueued
  (``enqueue_trial(..., skip_if_exists=True)``): they run first, on tonight's data;
- with ``seed_sampler`` every completed trial is also added to tonight's study
  (``add_trial``) with its value, so TPE/GP start from that history instead of random
  start-up trials (bench/nightly_warm_start.md measures it). Seeded trials carry no
  per-epoch values, so the pruner judges tonight's trials only against tonight's (the
  data may have changed), and they never count toward the budget nor as the night's
  best (:func:`automl.study.results.own_trials`).

A parameter set that no longer fits tonight's space (a parameter removed, a range
narrowed) is left out and counted, never enqueued out of range.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any, Mapping

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from automl.optuna_private import storage_of
from automl.search_space import SearchSpace
from automl.study import attrs


@dataclasses.dataclass(frozen=True)
class PastTrial:
    study: str
    number: int
    value: float
    params: dict[str, Any]  # Optuna's params (encoded names), as enqueue_trial takes them

    @property
    def source(self) -> str:
        return f"{self.study}#{self.number}"


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What tonight's study received."""

    from_studies: tuple[str, ...]
    enqueued: tuple[PastTrial, ...]
    seeded: int
    left_out: int  # parameter sets that do not fit tonight's space


def night_of(study_name: str, base: str) -> dt.date | None:
    """The date of a night study of ``base``, or None for any other study."""
    m = re.fullmatch(re.escape(base) + r"-(\d{8})", study_name)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def previous_nights(storage: str | optuna.storages.BaseStorage, base: str, before: dt.date,
                    nights: int) -> list[str]:
    """Names of the ``nights`` latest night studies of ``base`` dated before ``before``, newest first."""
    dated = [(d, name) for name in optuna.get_all_study_names(storage)
             if (d := night_of(name, base)) is not None and d < before]
    return [name for _, name in sorted(dated, reverse=True)[:nights]]


def completed_trials(storage: str | optuna.storages.BaseStorage,
                     studies: list[str]) -> list[tuple[str, FrozenTrial]]:
    """(study name, trial) of every completed trial the studies ran themselves."""
    out: list[tuple[str, FrozenTrial]] = []
    for name in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.value is not None and attrs.SEEDED_FROM not in t.user_attrs:
                out.append((name, t))
    return out


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(sorted(params.items()), default=str)


def top_k(trials: list[PastTrial], k: int, maximize: bool) -> list[PastTrial]:
    """The ``k`` best distinct parameter sets (each with its best value), best first; ties
    go to the newer night, then the lower trial number."""
    best: dict[str, PastTrial] = {}
    for t in trials:
        key = _key(t.params)
        held = best.get(key)
        if held is None or (t.value > held.value if maximize else t.value < held.value):
            best[key] = t
    ranked = sorted(best.values(), key=lambda t: (-t.value if maximize else t.value, _neg_study(t.study), t.number))
    return ranked[:k]


def _neg_study(name: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in name)  # newer (larger) names first


class _Probe:
    """A TrialLike that answers with given values and records tonight's distributions."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.distributions: dict[str, BaseDistribution] = {}

    def _answer(self, name: str, dist: BaseDistribution, fallback: Any) -> Any:
        self.distributions[name] = dist
        return self.values.get(name, fallback)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._answer(name, FloatDistribution(low, high, step=step, log=log), low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._answer(name, IntDistribution(low, high, step=step, log=log), low)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._answer(name, CategoricalDistribution(list(choices)), list(choices)[0])

    def set_user_attr(self, key: str, value: Any) -> None:
        pass


def _contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not dist.low <= value <= dist.high:
            return False
        if dist.step is not None:
            steps = (value - dist.low) / dist.step
            return abs(steps - round(steps)) < 1e-8
        return True
    return False


def fit_to_space(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, BaseDistribution] | None:
    """Tonight's distributions of ``params`` if every one of them is still a parameter of
    ``space`` and inside its range (conditional bounds included), else None."""
    probe = _Probe(params)
    try:
        space.suggest(probe)
    except (ValueError, TypeError, KeyError):
        return None
    if set(params) - set(probe.distributions):
        return None  # a parameter tonight's space no longer has
    dists = {name: probe.distributions[name] for name in params}
    return dists if all(_contains(dists[n], v) for n, v in params.items()) else None


def warm_start(study: optuna.Study, space: SearchSpace, base: str, night: dt.date, *, top: int, nights: int,
               seed_sampler: bool, maximize: bool) -> WarmStart:
    """Enqueue the previous nights' top ``top`` parameter sets into ``study`` and, with
    ``seed_sampler``, add their completed trials as history. Safe to call again on a
    resumed night: nothing is enqueued or added twice."""
    storage = storage_of(study)
    studies = [s for s in previous_nights(storage, base, night, nights) if s != study.study_name]
    past: list[PastTrial] = []
    fits: dict[str, dict[str, BaseDistribution]] = {}
    left_out = 0
    for name, t in completed_trials(storage, studies):
        p = PastTrial(name, t.number, float(t.value or 0.0), dict(t.params))
        dists = fit_to_space(space, p.params)
        if dists is None:
            left_out += 1
            continue
        fits[p.source] = dists
        past.append(p)
    chosen = top_k(past, top, maximize) if top > 0 else []
    for p in chosen:
        study.enqueue_trial(p.params, user_attrs={attrs.WARM_START_FROM: p.source}, skip_if_exists=True)
    seeded = 0
    if seed_sampler:
        present = {t.user_attrs.get(attrs.SEEDED_FROM) for t in study.get_trials(deepcopy=False)}
        for p in past:
            if p.source in present:
                continue
            study.add_trial(optuna.trial.create_trial(
                params=p.params, distributions=fits[p.source], value=p.value,
                user_attrs={attrs.SEEDED_FROM: p.source},
            ))
            seeded += 1
    return WarmStart(tuple(studies), tuple(chosen), seeded, left_out)
