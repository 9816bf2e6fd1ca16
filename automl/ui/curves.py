"""The per-epoch validation curves of every trial, drawn so learners and non-learners part.

Colour says how a trial ended (complete, pruned, failed, running), the best trial is the
thick green line, a pruned trial ends in a cross at the epoch it was stopped (with the
rule, when the run recorded one) and a failed one in a square. A dashed line marks where
"learned" starts (:mod:`automl.study.digest`). When flat curves near zero and learners
differ by more than a decade, the value axis is symmetric-log (linear below the flat
curves' level, logarithmic above), so 0.01 noise and a 0.6 learner are both readable.

:func:`plot_curves` returns what it drew (:class:`CurvesFigure`), so tests check the marker
positions and colours from the data, not from pixels.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from automl.study.digest import StudyDigest, TrialStory

STATE_COLORS = {
    TrialState.COMPLETE: "#1f77b4",
    TrialState.PRUNED: "#ff7f0e",
    TrialState.FAIL: "#d62728",
    TrialState.RUNNING: "#7f7f7f",
    TrialState.WAITING: "#bcbd22",
}
BEST_COLOR = "#2ca02c"
STOP_MARKERS = {TrialState.PRUNED: "X", TrialState.FAIL: "s", TrialState.RUNNING: ">"}
LINE_STYLES = {TrialState.COMPLETE: "-", TrialState.PRUNED: "--", TrialState.FAIL: ":",
               TrialState.RUNNING: "-.", TrialState.WAITING: "-."}
SYMLOG_SPAN = 10.0  # the largest value over the smallest trial's peak from which the axis goes log


@dataclasses.dataclass(frozen=True)
class CurveSeries:
    """One trial's line as drawn."""

    number: int
    state: TrialState
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    color: str
    linestyle: str
    linewidth: float
    best: bool
    learned: bool
    stop: tuple[int, float] | None  # where its stop marker sits (pruned: the prune epoch)
    stop_marker: str | None
    note: str | None  # the text beside its end


@dataclasses.dataclass(frozen=True)
class CurvesFigure:
    series: tuple[CurveSeries, ...]
    scale: str  # "linear" or "symlog"
    linthresh: float | None  # symlog: linear below this
    threshold: float | None  # the dashed "learned" line, when some trial learned
    path: Path


def choose_scale(series: list[CurveSeries]) -> tuple[str, float | None]:
    """``("symlog", linthresh)`` when the curves are non-negative and the largest value is
    at least :data:`SYMLOG_SPAN` times the smallest trial's peak; else ``("linear", None)``.
    ``linthresh`` is that smallest peak rounded down to a power of ten (at least 1e-4)."""
    values = [v for s in series for v in s.values]
    peaks = [max(s.values) for s in series if s.values and max(s.values) > 0]
    if not values or min(values) < 0 or not peaks:
        return "linear", None
    low, high = min(peaks), max(values)
    if high < SYMLOG_SPAN * low:
        return "linear", None
    return "symlog", max(1e-4, 10.0 ** math.floor(math.log10(low)))


def _series(story: TrialStory, best_number: int | None) -> CurveSeries | None:
    if not story.curve:
        return None
    epochs = tuple(e for e, _ in story.curve)
    values = tuple(v for _, v in story.curve)
    is_best = story.number == best_number
    color = BEST_COLOR if is_best else STATE_COLORS.get(story.state, "#7f7f7f")
    stop = None
    note = None
    if story.state == TrialState.PRUNED:
        epoch = story.stop_epoch if story.stop_epoch is not None else epochs[-1]
        at = story.value_at(epoch)
        stop = (epoch, at if at is not None else values[0])
        note = f"#{story.number} pruned @{epoch}" + (f" by {story.stop_rule}" if story.stop_rule else "")
    elif story.state in (TrialState.FAIL, TrialState.RUNNING):
        stop = (epochs[-1], values[-1])
        note = f"#{story.number} {'failed' if story.state == TrialState.FAIL else 'running'}"
    if is_best:
        note = f"#{story.number} best"
    width = 2.8 if is_best else (1.6 if story.learned else 1.0)
    return CurveSeries(story.number, story.state, epochs, values, color, LINE_STYLES.get(story.state, "-"),
                       width, is_best, story.learned, stop, STOP_MARKERS.get(story.state), note)


def plot_curves(digest: StudyDigest, path: Path) -> CurvesFigure:
    """Draw every trial's curve into ``path`` (PNG); returns what was drawn."""
    best_number = digest.best.number if digest.best else None
    series = [s for s in (_series(t, best_number) for t in digest.trials) if s is not None]
    series.sort(key=lambda s: (s.best, s.learned))  # the best on top, learners above the rest
    scale, linthresh = choose_scale(series)
    threshold = digest.rule.threshold

    fig = Figure(figsize=(9, 5.2))
    ax = fig.add_subplot()
    for s in series:
        alpha = 1.0 if s.best or s.learned else 0.75
        ax.plot(s.epochs, s.values, s.linestyle, color=s.color, lw=s.linewidth, alpha=alpha,
                marker="o" if len(s.epochs) == 1 else None, ms=4)
        if s.stop is not None and s.stop_marker:
            ax.plot(*s.stop, s.stop_marker, color=s.color, ms=9, mec="black", mew=0.6, zorder=4)
        if s.note:
            at = s.stop or (s.epochs[-1], s.values[-1])
            ax.annotate(s.note, at, textcoords="offset points", xytext=(5, 3), fontsize=7, color=s.color)
    if threshold is not None:
        ax.axhline(threshold, color="#555555", ls=(0, (4, 3)), lw=1.0)
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh, linscale=0.6)
        ax.set_ylim(bottom=0)
    present = {s.state for s in series}
    handles = [Line2D([], [], color=BEST_COLOR, lw=2.8, label="best trial")]
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        if state in present:
            label = {TrialState.PRUNED: "pruned (X where stopped)", TrialState.FAIL: "failed"}.get(
                state, state.name.lower())
            handles.append(Line2D([], [], ls=LINE_STYLES[state], marker=STOP_MARKERS.get(state),
                                  color=STATE_COLORS[state], mec="black", mew=0.6, label=label))
    if threshold is not None:
        side = ">=" if digest.maximize else "<="
        handles.append(Line2D([], [], color="#555555", ls=(0, (4, 3)), label=f"learned: {side} {threshold:.3g}"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    epochs = [e for s in series for e in s.epochs]
    if epochs:  # room on the right for the notes beside the last epoch
        ax.set_xlim(min(epochs) - 0.3, max(epochs) + max(1.0, 0.12 * (max(epochs) - min(epochs))))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (step reported to Optuna)")
    ax.set_ylabel(digest.metric + (" (symmetric log scale)" if scale == "symlog" else ""))
    learned = len(digest.learned)
    ax.set_title(f"Per-epoch validation curves: {learned} of {len(digest.trials)} trials learned")
    ax.grid(alpha=0.3, which="both" if scale == "symlog" else "major")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return CurvesFigure(tuple(series), scale, linthresh, threshold, Path(path))
