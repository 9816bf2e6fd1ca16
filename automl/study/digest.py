"""What a study's trials say at a glance: which learned, which were pruned and where, the
best, and whether parameter importances mean anything yet.

Computed from the trials alone (no config), so the run's closing summary, the report and
``automl report`` on a finished study tell the same story. The rules, once each:

- a trial's **score** is its value when it completed, else its best reported epoch (the
  value the pruner judged it by);
- a trial **learned** when its score got at least halfway from where trials typically
  start (the median first reported epoch) to the best score, and the best itself moved
  clearly away from that start (:func:`min_gain`): a study whose curves are all noise has
  no learner, however its noise ranks;
- **importances** are computed over the finished trials (complete, and pruned ones with a
  reported epoch, at their score) only when there are at least
  :data:`MIN_IMPORTANCE_TRIALS` of them and their scores spread by more than noise;
  otherwise the digest says why they are left out. (On 10 trials of noise below 0.015,
  PED-ANOVA handed out 0.13-0.20 to every parameter: numbers that explain nothing.)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from typing import Iterable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState

MIN_IMPORTANCE_TRIALS = 5
LEARNED_FRACTION = 0.5  # how far from the typical start to the best a learner got
UNIT_NOISE = 0.05  # for a metric in [0, 1] (mAP): a smaller gain is noise (chance mAP50 of a shapes task ~0.01-0.02)
RELATIVE_NOISE = 0.1  # for other metrics: a gain below this fraction of the start's size is noise
# user attributes that may say which rule pruned a trial (the first one set wins)
PRUNE_RULE_ATTRS = ("pruned_by", "prune_rule", "prune_reason")


@dataclasses.dataclass(frozen=True)
class TrialStory:
    """One trial as the digest sees it."""

    number: int
    state: TrialState
    curve: tuple[tuple[int, float], ...]  # (epoch, value) as reported, by epoch; NaN left out
    score: float | None  # the value (complete) or the best reported epoch's value; None: nothing reported
    best_epoch: int | None  # the epoch of the best reported value
    stop_epoch: int | None  # pruned: the epoch it was stopped at (prune_epoch, else its last epoch)
    stop_rule: str | None  # pruned: the rule that stopped it, when the run recorded one
    failure: str | None  # failed: the recorded diagnosis
    learned: bool

    @property
    def finished(self) -> bool:
        """Complete, or pruned after reporting something: a result the sampler learns from."""
        return self.score is not None and self.state in (TrialState.COMPLETE, TrialState.PRUNED)

    def value_at(self, epoch: int) -> float | None:
        """The value reported at ``epoch``, else at the last reported epoch before it."""
        before = [v for e, v in self.curve if e <= epoch]
        return before[-1] if before else None


@dataclasses.dataclass(frozen=True)
class LearnedRule:
    """Where "learned" starts for this study, and why (see the module docstring)."""

    metric: str
    maximize: bool
    start: float | None  # median first reported value over the trials
    best: float | None  # the best score
    min_gain: float | None  # the smallest move from the start that is not noise
    threshold: float | None  # a score on the good side of this learned; None: no trial did

    def learned(self, score: float | None) -> bool:
        if self.threshold is None or score is None:
            return False
        return score >= self.threshold if self.maximize else score <= self.threshold

    def describe(self) -> str:
        """One phrase: the threshold and where it comes from, or why nobody learned."""
        if self.start is None or self.best is None or self.min_gain is None:
            return "no trial reported a value yet"
        if self.threshold is None:
            return (f"no trial moved {self.metric} from the typical first epoch ({self.start:.3g}) by "
                    f"{self.min_gain:.2g} or more (best {self.best:.3g}): the curves are noise")
        side = ">=" if self.maximize else "<="
        return (f"{self.metric} {side} {self.threshold:.3g}, halfway from the typical first epoch "
                f"({self.start:.3g}) to the best ({self.best:.3g})")


@dataclasses.dataclass(frozen=True)
class Importances:
    """Parameter importances (name -> share, summing to 1, largest first), or why not."""

    values: dict[str, float]
    reason: str  # why they are left out; "" when computed
    basis: str  # which trials they are computed over


@dataclasses.dataclass(frozen=True)
class StudyDigest:
    metric: str
    maximize: bool
    trials: tuple[TrialStory, ...]
    best: TrialStory | None  # the best complete trial
    rule: LearnedRule
    importances: Importances

    def of_state(self, state: TrialState) -> list[TrialStory]:
        return [t for t in self.trials if t.state == state]

    @property
    def learned(self) -> list[TrialStory]:
        return [t for t in self.trials if t.learned]

    @property
    def pruned(self) -> list[TrialStory]:
        return self.of_state(TrialState.PRUNED)

    @property
    def failed(self) -> list[TrialStory]:
        return self.of_state(TrialState.FAIL)

    def prune_epochs(self) -> dict[int | None, list[TrialStory]]:
        """Stop epoch -> the trials pruned there (in epoch order)."""
        out: dict[int | None, list[TrialStory]] = {}
        for t in sorted(self.pruned, key=lambda t: (t.stop_epoch is None, t.stop_epoch or 0, t.number)):
            out.setdefault(t.stop_epoch, []).append(t)
        return out

    def describe_pruned(self) -> str:
        """``"2 at epoch 2 (#1, #4); 1 at epoch 5 (#2 by not_learning)"``; "" when none was pruned."""
        parts = []
        for epoch, stories in self.prune_epochs().items():
            where = "at an unknown epoch" if epoch is None else f"at epoch {epoch}"
            named = ", ".join(f"#{t.number}" + (f" by {t.stop_rule}" if t.stop_rule else "") for t in stories)
            parts.append(f"{len(stories)} {where} ({named})")
        return "; ".join(parts)


def _curve(t: FrozenTrial) -> tuple[tuple[int, float], ...]:
    return tuple((int(e), float(v)) for e, v in sorted(t.intermediate_values.items()) if not math.isnan(v))


def _pick(values: Iterable[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _stop_rule(t: FrozenTrial) -> str | None:
    for key in PRUNE_RULE_ATTRS:
        value = t.user_attrs.get(key)
        if value not in (None, "", [], ()):
            return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return None


def is_unit_metric(values: Iterable[float]) -> bool:
    """Every value in [0, 1], as mAP, accuracy or recall are."""
    values = list(values)
    return bool(values) and all(0.0 <= v <= 1.0 for v in values)


def min_gain(start: float, unit: bool) -> float:
    """The smallest difference between two values that is not noise: an absolute
    :data:`UNIT_NOISE` for a metric in [0, 1], else :data:`RELATIVE_NOISE` of the start's size."""
    if unit:
        return UNIT_NOISE
    return RELATIVE_NOISE * abs(start) if start else RELATIVE_NOISE


def learned_rule(metric: str, maximize: bool, trials: Sequence[FrozenTrial], best_score: float | None) -> LearnedRule:
    firsts = [c[0][1] for c in (_curve(t) for t in trials) if c]
    if not firsts or best_score is None:
        return LearnedRule(metric, maximize, None, best_score, None, None)
    start = float(statistics.median(firsts))
    everything = [v for t in trials for _, v in _curve(t)] + [best_score]
    gain_needed = min_gain(start, is_unit_metric(everything))
    gain = (best_score - start) if maximize else (start - best_score)
    if gain < gain_needed:
        return LearnedRule(metric, maximize, start, best_score, gain_needed, None)
    sign = 1.0 if maximize else -1.0
    return LearnedRule(metric, maximize, start, best_score, gain_needed, start + sign * LEARNED_FRACTION * gain)


def digest_study(study: optuna.Study, metric: str | None = None,
                 trials: Sequence[FrozenTrial] | None = None) -> StudyDigest:
    """The digest of ``study`` (single-objective); ``trials`` (default: all of the study's)
    lets a caller leave some out, e.g. history seeded from another study."""
    trials = list(study.get_trials(deepcopy=False) if trials is None else trials)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    metric = metric or (study.metric_names or ["objective"])[0]
    return digest_trials(trials, maximize, metric)


def digest_trials(trials: Sequence[FrozenTrial], maximize: bool, metric: str) -> StudyDigest:
    scores: dict[int, float | None] = {}
    for t in trials:
        curve = _curve(t)
        if t.state == TrialState.COMPLETE and t.value is not None and not math.isnan(t.value):
            scores[t.number] = float(t.value)
        else:
            scores[t.number] = _pick((v for _, v in curve), maximize) if curve else None
    complete = [t for t in trials if t.state == TrialState.COMPLETE and scores[t.number] is not None]
    best_trial = None
    if complete:
        best_trial = (max if maximize else min)(complete, key=lambda t: scores[t.number] or 0.0)
    rule = learned_rule(metric, maximize, trials,
                        None if best_trial is None else scores[best_trial.number])
    stories = []
    for t in trials:
        curve = _curve(t)
        best_epoch = None
        if curve:
            target = _pick((v for _, v in curve), maximize)
            best_epoch = next(e for e, v in curve if v == target)
        stop_epoch = None
        if t.state == TrialState.PRUNED:
            recorded = t.user_attrs.get("prune_epoch")
            stop_epoch = int(recorded) if isinstance(recorded, (int, float)) else (curve[-1][0] if curve else None)
        failure = t.user_attrs.get("failure") if t.state == TrialState.FAIL else None
        stories.append(TrialStory(
            number=t.number, state=t.state, curve=curve, score=scores[t.number], best_epoch=best_epoch,
            stop_epoch=stop_epoch, stop_rule=_stop_rule(t) if t.state == TrialState.PRUNED else None,
            failure=None if failure is None else str(failure),
            learned=t.state != TrialState.FAIL and rule.learned(scores[t.number]),
        ))  # fmt: skip
    by_number = {s.number: s for s in stories}
    best = None if best_trial is None else by_number[best_trial.number]
    importances = param_importances(trials, stories, maximize, metric)
    return StudyDigest(metric, maximize, tuple(stories), best, rule, importances)


def param_importances(trials: Sequence[FrozenTrial], stories: Sequence[TrialStory], maximize: bool,
                      metric: str) -> Importances:
    """PED-ANOVA importances over the finished trials at their scores, or why not (module docstring)."""
    finished = [s for s in stories if s.finished]
    n_complete = sum(s.state == TrialState.COMPLETE for s in finished)
    basis = f"PED-ANOVA over {n_complete} complete and {len(finished) - n_complete} pruned trials"
    if len(finished) > n_complete:
        basis += ", each pruned one at its best reported epoch"
    if len(finished) < MIN_IMPORTANCE_TRIALS:
        return Importances({}, f"only {len(finished)} finished trial(s) with a reported {metric}; "
                               f"they need at least {MIN_IMPORTANCE_TRIALS}", basis)
    scores = [s.score for s in finished if s.score is not None]
    low, high = min(scores), max(scores)
    needed = min_gain(statistics.median(scores), is_unit_metric(scores))
    if high - low < needed:
        return Importances({}, f"the finished trials' {metric} spans only {low:.4g}..{high:.4g} (less than "
                               f"{needed:.2g} apart): that is noise, there is nothing for the parameters to explain",
                           basis)
    by_number = {t.number: t for t in trials}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" line
    try:
        probe = optuna.create_study(direction="maximize" if maximize else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    seen: dict[str, BaseDistribution] = {}
    try:
        for s in finished:
            t = by_number[s.number]
            for name, dist in t.distributions.items():
                if seen.setdefault(name, dist) != dist:
                    return Importances({}, f"parameter {name!r} was searched over different ranges in "
                                           "different trials (the space changed during the study)", basis)
            probe.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                      value=s.score))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" for tiny sets: caught below
            values = get_param_importances(probe, evaluator=PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return Importances({}, f"optuna could not compute them: {exc}", basis)
    if not values:
        return Importances({}, "no parameter was tuned in the finished trials", basis)
    if len(values) > 1 and max(values.values()) - min(values.values()) < 1e-9:
        return Importances({}, "every parameter came out equally important (too few distinct results to "
                               "tell them apart)", basis)
    return Importances(dict(values), "", basis)
