"""A static HTML report of one study: what a person reads after (or during) a run.

``out_dir/report.html`` plus PNG figures beside it (optimization history, per-epoch curves of
every trial with learners and pruned trials marked, parameter importances when they mean
something), what the trials say at a glance (:mod:`automl.study.digest`), the best trial's
detections beside the ground truth on validation images (``predictions/``, made by
:mod:`automl.study.showcase`), the best trials, every trial's device / job / failure
diagnosis, and the best spec. Figures are drawn on ``matplotlib.figure.Figure`` objects with
the Agg canvas, never through pyplot, so the report can be written from any thread of a
running service without touching a global backend.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.config.storage import redact_url
from automl.errors import UserError
from automl.optuna_private import trial_id
from automl.study import attrs
from automl.study.digest import Importances, StudyDigest, digest_trials
from automl.study.night_record import NightRecord
from automl.study.packing import slot_usage
from automl.study.results import trial_value
from automl.study.showcase import FOLDER as PREDICTIONS_FOLDER
from automl.study.showcase import Showcase
from automl.ui.artifacts import ArtifactRecorder
from automl.ui.curves import BEST_COLOR, STATE_COLORS, plot_curves

BEST_TABLE_SIZE = 5
LOG_TAIL_LINES = 40
FIGURE_FILES = ("history.png", "epoch_curves.png", "importances.png")
_STATE_COLORS = STATE_COLORS
_BEST_COLOR = BEST_COLOR


def resolve_study_name(storage_url: str, study_name: str | None) -> str:
    """``study_name`` if it is in the storage; else the only study there; else a UserError."""
    names = sorted(optuna.get_all_study_names(storage=storage_url))
    where = redact_url(storage_url)
    if study_name is not None:
        if study_name not in names:
            listed = ", ".join(names) if names else "none"
            raise UserError(
                f"no study named {study_name!r} in {where} (studies there: {listed}); "
                "pass one of those to --study"
            )
        return study_name
    if not names:
        raise UserError(f"no study in {where}: start one with `automl run` first")
    if len(names) > 1:
        raise UserError(
            f"{len(names)} studies in {where}: {', '.join(names)}; choose one with --study NAME"
        )
    return names[0]


def default_report_dir(workspace: Path, study_name: str) -> Path:
    """``<workspace>/<study>/report``: where ``automl run`` writes it at the end of a run."""
    return Path(workspace) / study_name / "report"


@dataclass
class _Spec:
    text: str
    source: str  # where it was read from, shown under the spec


def write_report(
    storage_url: str, study_name: str, out_dir: Path, artifact_dir: Path | None = None
) -> Path:
    """Write ``out_dir/report.html`` and its figures for ``study_name``; returns the HTML path.

    ``artifact_dir`` (``<workspace>/artifacts``) lets the best spec be read from the best
    trial's ``spec.yaml`` artifact when its ``spec_path`` no longer exists.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the study exists already: skip the table-creation pass (seconds: it imports alembic)
    storage = optuna.storages.RDBStorage(storage_url, skip_table_creation=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        if len(study.directions) != 1:
            raise UserError(
                f"study {study_name!r} has {len(study.directions)} objectives: the report "
                "covers single-objective studies (the pruners need one objective anyway)"
            )
        trials = study.get_trials(deepcopy=False)
        maximize = study.direction == StudyDirection.MAXIMIZE
        metric = (study.metric_names or [study.user_attrs.get(attrs.STUDY_METRIC) or "objective"])[0]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        # a trial seeded from an earlier night is history, not a result of this study
        ranked = sorted((t for t in complete if attrs.SEEDED_FROM not in t.user_attrs), key=trial_value,
                        reverse=maximize)
        best = ranked[0] if ranked else None

        figures: dict[str, str] = {}  # title -> file name
        for old in FIGURE_FILES:  # a figure that can no longer be drawn must not linger
            (out_dir / old).unlink(missing_ok=True)
        if trials:
            _plot_history(trials, maximize, metric, out_dir / "history.png")
            figures["Optimization history"] = "history.png"
        digest = digest_trials(trials, maximize, metric)
        if any(t.intermediate_values for t in trials):
            plot_curves(digest, out_dir / "epoch_curves.png")
            figures["Per-epoch validation curves"] = "epoch_curves.png"
        importances = digest.importances
        if importances.values:
            _plot_importances(importances, out_dir / "importances.png")
            figures["Parameter importances"] = "importances.png"
        spec = _best_spec(study, best, storage, artifact_dir)
        showcase = Showcase.load(out_dir / PREDICTIONS_FOLDER)

        page = _render_html(
            study, storage_url, trials, ranked, metric, maximize, figures, importances, spec,
            story=_story_section(digest), pictures=_pictures_section(showcase, best, out_dir),
        )
    finally:
        storage.engine.dispose()
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_history(trials: list[FrozenTrial], maximize: bool, metric: str, path: Path) -> None:
    """Objective per trial number, the best-so-far line, pruned and failed trials marked."""
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        xs = [t.number for t in done]
        ys = [trial_value(t) for t in done]
        ax.scatter(xs, ys, color=_STATE_COLORS[TrialState.COMPLETE], label="complete", zorder=3)
        best_so_far: list[float] = []
        best: float | None = None
        for y in ys:
            best = y if best is None or (y > best if maximize else y < best) else best
            best_so_far.append(best)
        ax.step(xs, best_so_far, where="post", color=_BEST_COLOR, label="best so far")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            color=_STATE_COLORS[TrialState.PRUNED],
            label="pruned (value at its last epoch)",
            zorder=3,
        )
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        # no objective value: a tick on the x axis at the trial number
        ax.scatter(
            [t.number for t in failed],
            [0.02] * len(failed),
            marker="v",
            color=_STATE_COLORS[TrialState.FAIL],
            transform=ax.get_xaxis_transform(),
            label="failed (no value)",
            zorder=3,
            clip_on=False,
        )
    ax.set_xlim(-0.5, max(t.number for t in trials) + 0.5)  # scatter on axes y skips autoscale
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(metric)
    ax.set_title(f"Optimization history ({'maximize' if maximize else 'minimize'} {metric})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def _plot_importances(importances: Importances, path: Path) -> None:
    values = importances.values
    names = list(values)[::-1]  # most important on top
    fig = Figure(figsize=(8, 0.45 * len(names) + 1.4))
    ax = fig.add_subplot()
    ax.barh(names, [values[n] for n in names], color=_STATE_COLORS[TrialState.COMPLETE])
    for i, n in enumerate(names):
        ax.text(values[n], i, f" {values[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance ({importances.basis})")
    ax.set_title("Parameter importances")
    ax.set_xlim(0, max(values.values()) * 1.15 or 1)
    _save(fig, path)


# ---------------------------------------------------------------- best spec


def _spec_from_value(value: object) -> str | None:
    """A spec given as a path to a YAML file, as YAML text, or as a mapping."""
    if isinstance(value, dict):
        return yaml.safe_dump(value, sort_keys=False)
    if isinstance(value, str):
        if "\n" in value:
            return value
        if Path(value).is_file():
            return Path(value).read_text(encoding="utf-8")
    return None


def _best_spec(
    study: optuna.Study,
    best: FrozenTrial | None,
    storage: optuna.storages.BaseStorage,
    artifact_dir: Path | None,
) -> _Spec | None:
    """The spec the best trial ran with, from the first source that still has it."""
    if best is None:
        return None
    tried: list[str] = []
    for key in ("spec_path", "best_spec"):
        if key in best.user_attrs:
            text = _spec_from_value(best.user_attrs[key])
            if text is not None:
                return _Spec(text, f"trial {best.number} user attribute {key!r}")
            tried.append(f"{key}={best.user_attrs[key]!r} (file gone)")
    if artifact_dir is not None and Path(artifact_dir).is_dir():
        rec = ArtifactRecorder(Path(artifact_dir))
        meta = rec.find(storage, trial_id(best), "spec.yaml")
        if meta is not None:
            try:
                text = rec.read_bytes(meta.artifact_id).decode("utf-8")
                return _Spec(text, f"trial {best.number} artifact spec.yaml ({meta.artifact_id})")
            except optuna.artifacts.exceptions.ArtifactNotFound:
                tried.append(f"artifact {meta.artifact_id} (file gone)")
    if "best_spec" in study.user_attrs:
        text = _spec_from_value(study.user_attrs["best_spec"])
        if text is not None:
            return _Spec(text, "study user attribute 'best_spec'")
    return _Spec("", "not found; tried: " + ("; ".join(tried) or "no spec recorded"))


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.9em;width:100%}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;padding:0 .4em;border-radius:3px;color:#fff}
.COMPLETE{background:#1f77b4}.PRUNED{background:#ff7f0e}.FAIL{background:#d62728}
.RUNNING{background:#7f7f7f}.WAITING{background:#bcbd22}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em;max-height:40em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
.muted{color:#777} code{font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _attr(t: FrozenTrial, key: str) -> str:
    """A user attribute as escaped text; '–' when unset (or cleared to None on a retry)."""
    value = t.user_attrs.get(key)
    return "–" if value is None else _e(value)


def _params(t: FrozenTrial) -> str:
    return "<br>".join(f"<code>{_e(k)}</code>={_e(_fmt(v))}" for k, v in t.params.items())


def _duration(t: FrozenTrial) -> str:
    if t.datetime_start is None:
        return "–"
    end = t.datetime_complete or dt.datetime.now()
    seconds = (end - t.datetime_start).total_seconds()
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return text + ("" if t.datetime_complete else " (so far)")


def _best_epoch(t: FrozenTrial, maximize: bool) -> str:
    if not t.intermediate_values:
        return "–"
    pick = max if maximize else min
    step = pick(t.intermediate_values, key=lambda s: t.intermediate_values[s])
    return f"{step} ({_fmt(t.intermediate_values[step])})"


def _outcome(t: FrozenTrial) -> str:
    """One line on how the trial ended: prune epoch, failure diagnosis and fix."""
    attrs = t.user_attrs
    retried = ""
    if attrs.get("oom_retry"):
        retried = f"<br>out of GPU memory beside others, retried alone: {_e(attrs['oom_retry'])}"
    if t.state == TrialState.PRUNED:
        epoch = attrs.get("prune_epoch", max(t.intermediate_values, default=None))
        text = f"pruned at epoch {_e(_fmt(epoch))}"
        if attrs.get("pruned_by"):
            text += f" by {_e(attrs['pruned_by'])}"
        if attrs.get("stop_seconds") is not None:
            text += f"; job gone {_e(_fmt(attrs['stop_seconds']))} s after the decision"
        return text + retried
    if t.state == TrialState.FAIL:
        text = _e(attrs.get("failure") or "failed (no diagnosis recorded)")
        if attrs.get("exit_code") is not None:
            text += f" (exit code {_e(attrs['exit_code'])})"
        if attrs.get("failure_fix"):
            text += f"<br><b>fix:</b> {_e(attrs['failure_fix'])}"
        return text + retried
    if attrs.get("interrupted"):
        return "interrupted (will be retried)" + retried
    if attrs.get("seeded_from"):
        return f"seeded from {_e(attrs['seeded_from'])} (sampler history, not run here)"
    return retried.removeprefix("<br>")


def _beside(t: FrozenTrial) -> str:
    """Who shared the trial's slot: already there at its start, and all who did meanwhile."""
    at_start = t.user_attrs.get("packed_with")
    during = t.user_attrs.get("ran_beside")
    if at_start is None and during is None:
        return "–"
    start = ", ".join(f"#{n}" for n in at_start or []) or "none"
    ever = ", ".join(f"#{n}" for n in during or []) or "none"
    return f"at start: {_e(start)}<br>meanwhile: {_e(ever)}"


def _packing(trials: list[FrozenTrial]) -> list[str]:
    usage = slot_usage(trials)
    if not usage:
        return []
    out = ["<h2>Packing</h2>",
           '<p class="muted">How many trials shared each device slot (from each job\'s start and end).</p>',
           "<table><tr><th>slot</th><th>trials</th><th>most at once</th><th>mean at once while busy</th>"
           "<th>busy</th><th>trial numbers</th></tr>"]
    for u in usage:
        out.append(
            f"<tr><td><code>{_e(u.slot)}</code></td><td class=num>{len(u.trials)}</td>"
            f"<td class=num>{u.max_at_once}</td><td class=num>{u.mean_at_once:.2f}</td>"
            f"<td class=num>{u.busy_s:.0f} s</td><td>{_e(', '.join(f'#{n}' for n in u.trials))}</td></tr>"
        )
    out.append("</table>")
    return out


def _log_tail(t: FrozenTrial) -> str:
    tail = t.user_attrs.get("log_tail")
    if tail is None:
        return ""
    lines = tail if isinstance(tail, list) else str(tail).splitlines()
    return "\n".join(str(line) for line in lines[-LOG_TAIL_LINES:])


def _render_html(
    study: optuna.Study,
    storage_url: str,
    trials: list[FrozenTrial],
    ranked: list[FrozenTrial],
    metric: str,
    maximize: bool,
    figures: dict[str, str],
    importances: Importances,
    spec: _Spec | None,
    story: list[str] | None = None,
    pictures: list[str] | None = None,
) -> str:
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    summary = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Study {_e(study.study_name)}: report</title><style>{_CSS}</style></head><body>",
        f"<h1>Study <code>{_e(study.study_name)}</code></h1>",
        f'<p class="sub">{"maximize" if maximize else "minimize"} <b>{_e(metric)}</b> · '
        f"{len(trials)} trials ({_e(summary or 'none yet')}) · storage "
        f"<code>{_e(redact_url(storage_url))}</code> · written {_e(now)}</p>",
    ]

    out.extend(story or [])

    out.append("<h2>Best trials</h2>")
    if ranked:
        out.append(
            "<table><tr><th>rank</th><th>trial</th><th>" + _e(metric) + "</th>"
            "<th>best epoch (value)</th><th>params</th><th>device</th><th>job</th>"
            "<th>duration</th><th>results dir</th></tr>"
        )
        for rank, t in enumerate(ranked[:BEST_TABLE_SIZE], 1):
            out.append(
                f"<tr><td class=num>{rank}</td><td class=num>#{t.number}</td>"
                f"<td class=num>{_e(_fmt(t.value))}</td><td>{_e(_best_epoch(t, maximize))}</td>"
                f"<td>{_params(t)}</td><td>{_attr(t, 'device')}</td>"
                f"<td>{_attr(t, 'job_id')}</td><td>{_e(_duration(t))}</td>"
                f"<td><code>{_attr(t, 'results_dir')}</code></td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No completed trial yet.</p>')

    for title, name in figures.items():
        out.append(f"<h2>{_e(title)}</h2>")
        out.append(f'<figure><img src="{_e(name)}" alt="{_e(title)}"></figure>')
        if name == "epoch_curves.png":
            no_curve = [t.number for t in trials if not t.intermediate_values]
            if no_curve:
                listed = ", ".join(f"#{n}" for n in no_curve)
                out.append(f'<p class="muted">No epoch reported by trials {listed}.</p>')
    if not importances.values:
        out.append("<h2>Parameter importances</h2>")
        out.append(f'<p class="muted">Left out: {_e(importances.reason)}.</p>')
    out.extend(pictures or [])

    out.extend(_packing(trials))

    out.append("<h2>All trials</h2>")
    out.append(
        "<table><tr><th>trial</th><th>state</th><th>" + _e(metric) + "</th><th>epochs</th>"
        "<th>slot</th><th>beside</th><th>job</th><th>outcome</th><th>duration</th><th>params</th></tr>"
    )
    for t in trials:
        out.append(
            f"<tr><td class=num>#{t.number}</td>"
            f'<td><span class="state {t.state.name}">{t.state.name}</span></td>'
            f"<td class=num>{_e(_fmt(t.value))}</td>"
            f"<td class=num>{len(t.intermediate_values)}</td>"
            f"<td>{_attr(t, 'slot') if 'slot' in t.user_attrs else _attr(t, 'device')}</td>"
            f"<td>{_beside(t)}</td><td>{_attr(t, 'job_id')}</td>"
            f"<td>{_outcome(t)}</td><td>{_e(_duration(t))}</td><td>{_params(t)}</td></tr>"
        )
    out.append("</table>")

    troubled = [t for t in trials if t.state in (TrialState.FAIL, TrialState.PRUNED)]
    if any(_log_tail(t) for t in troubled):
        out.append("<h2>Log tails of failed and pruned trials</h2>")
        for t in troubled:
            tail = _log_tail(t)
            if tail:
                out.append(
                    f"<details{' open' if t.state == TrialState.FAIL else ''}><summary>"
                    f"trial #{t.number} ({t.state.name.lower()}) · "
                    f"<code>{_attr(t, 'results_dir')}</code></summary>"
                    f"<pre>{_e(tail)}</pre></details>"
                )

    out.append("<h2>Best spec</h2>")
    if spec is None:
        out.append('<p class="muted">No completed trial yet.</p>')
    elif not spec.text:
        out.append(f'<p class="muted">Spec {_e(spec.source)}.</p>')
    else:
        out.append(f'<p class="muted">From {_e(spec.source)}.</p><pre>{_e(spec.text)}</pre>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- nightly page
# (the nightly's own page; the study report above does not depend on it)


def write_nightly_page(records: list[NightRecord], out_dir: Path, base: str, metric: str) -> Path:
    """``out_dir/nightly.html`` + ``champion.png``: the champion's held-out ``metric``
    across nights, each night's best beside it, promotions marked, and every night's
    record as a row; ``records`` in the order the nights ran."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nights = [r for r in records if r.status != "skipped"]
    figure = out_dir / "champion.png"
    figure.unlink(missing_ok=True)
    scored = [r for r in nights if r.champion_value is not None or r.evaluation.candidate is not None]
    if scored:
        _plot_champion(scored, metric, figure)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Nightly {_e(base)}: champion across nights</title><style>{_CSS}</style></head><body>",
        f"<h1>Nightly <code>{_e(base)}</code></h1>",
        f'<p class="sub">{len(nights)} night(s) · champion scored on the fixed held-out set by '
        f"<b>{_e(metric)}</b> · written {_e(dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'))}</p>",
        "<h2>The champion's metric across nights</h2>",
    ]
    if scored:
        out.append(f'<figure><img src="{figure.name}" alt="champion {_e(metric)} per night"></figure>')
    else:
        out.append('<p class="muted">No night has scored a model yet.</p>')
    out.append("<h2>Nights</h2>")
    out.append(
        "<table><tr><th>night</th><th>study</th><th>status</th><th>best trial</th>"
        f"<th>night's best {_e(metric)}</th><th>champion {_e(metric)}</th><th>promoted</th>"
        "<th>champion after</th><th>why</th><th>duration</th></tr>"
    )
    for r in records:
        took = r.durations.get("total")
        out.append(
            f"<tr><td>{_e(r.night)}</td><td><code>{_e(r.study)}</code></td><td>{_e(r.status)}</td>"
            f"<td class=num>{_e(_fmt(r.best_trial))}</td><td class=num>{_e(_fmt(r.evaluation.candidate))}</td>"
            f"<td class=num>{_e(_fmt(r.evaluation.champion))}</td><td>{'yes' if r.promoted else 'no'}</td>"
            f"<td><code>{_e(r.champion or '–')}</code></td><td>{_e(r.error or r.reason)}</td>"
            f"<td class=num>{_e('–' if took is None else f'{took / 60:.1f} min')}</td></tr>"
        )
    out.append("</table></body></html>")
    path = out_dir / "nightly.html"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _plot_champion(records: list[NightRecord], metric: str, path: Path) -> None:
    """The champion's score after each night (a step line), each night's best as a dot,
    promotions as stars."""
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    xs = list(range(len(records)))
    champ = [r.champion_value for r in records]
    ax.step([x for x, v in zip(xs, champ) if v is not None], [v for v in champ if v is not None], where="post",
            color=_BEST_COLOR, lw=2.2, label="champion (held-out, that night)")
    cand = [(x, v) for x, r in zip(xs, records) if (v := r.evaluation.candidate) is not None]
    if cand:
        ax.scatter([x for x, _ in cand], [v for _, v in cand], color=_STATE_COLORS[TrialState.COMPLETE],
                   label="night's best (held-out)", zorder=3)
    promoted = [(x, v) for x, r in zip(xs, records) if r.promoted and (v := r.evaluation.candidate) is not None]
    if promoted:
        ax.scatter([x for x, _ in promoted], [v for _, v in promoted], marker="*", s=180,
                   color=_BEST_COLOR, label="promoted", zorder=4)
    ax.set_xticks(xs, [r.night for r in records], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"Champion {metric} across nights")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
# ---------------------------------------------------------------- at a glance, pictures
# (what the trials say and what the best model sees; automl.study.digest / showcase)


def _story_section(digest: StudyDigest) -> list[str]:
    """A few lines: how many learned (and by which rule), who was pruned where, failures, the best."""
    n = len(digest.trials)
    if not n:
        return []
    items = []
    learned = digest.learned
    if learned:
        listed = ", ".join(f"#{t.number}" for t in learned)
        items.append(f"<b>{len(learned)} of {n} trials learned</b> ({_e(listed)}): {_e(digest.rule.describe())}")
    else:
        items.append(f"<b>No trial learned</b>: {_e(digest.rule.describe())}")
    if digest.pruned:
        items.append(f"<b>{len(digest.pruned)} pruned</b>: {_e(digest.describe_pruned())}")
    for t in digest.failed:
        items.append(f"<b>#{t.number} failed</b>: {_e(t.failure or 'no diagnosis recorded')}")
    if digest.best is not None and digest.best.score is not None:
        at = "" if digest.best.best_epoch is None else f", best epoch {digest.best.best_epoch}"
        items.append(f"<b>Best</b>: trial #{digest.best.number}, {_e(digest.metric)} "
                     f"{_e(_fmt(digest.best.score))}{_e(at)}")
    if digest.importances.values:
        top = ", ".join(f"{name} {share:.2f}" for name, share in list(digest.importances.values.items())[:3])
        items.append(f"<b>Importances</b>: {_e(top)} ({_e(digest.importances.basis)})")
    else:
        items.append(f"<b>Importances left out</b>: {_e(digest.importances.reason)}")
    return ["<h2>At a glance</h2>", '<ul class="glance">', *[f"<li>{i}</li>" for i in items], "</ul>"]


def _pictures_section(showcase: Showcase | None, best: FrozenTrial | None, out_dir: Path) -> list[str]:
    """The best trial's detections beside the ground truth, or why there are none."""
    if best is None:
        return []
    out = ["<h2>The best trial's detections on validation images</h2>"]
    if showcase is None:
        out.append('<p class="muted">No pictures yet: <code>automl run</code> draws them when a study ends, '
                   "<code>automl report</code> when they are missing.</p>")
        return out
    if not showcase.ok:
        out.append(f'<p class="muted">No pictures: {_e(showcase.problem or "no image was drawn")}.</p>')
        return out
    if showcase.trial != best.number:
        out.append(f'<p class="muted">These pictures are of trial #{showcase.trial}, which is no longer the best '
                   f"(#{best.number}): run <code>automl report</code> to draw the best one's.</p>")
    out.append(f'<p class="muted">Left: the annotations (as training read them). Right: trial #{showcase.trial}\'s '
               f"detections with score &ge; {showcase.conf_threshold:.2f}, from checkpoint "
               f"<code>{_e(Path(showcase.checkpoint).name)}</code>, on the first {len(showcase.pictures)} "
               "validation images.</p>")
    out.append('<div style="display:flex;flex-wrap:wrap;gap:0 1.5em">')
    for p in showcase.pictures:
        src = p.path.relative_to(out_dir) if p.path.is_relative_to(out_dir) else p.path
        top = "" if p.top_score is None else f", highest score {p.top_score:.2f}"
        caption = (f"image {p.image_id} ({p.file_name}): {p.ground_truth} annotated, "
                   f"{p.shown} detected{top}")
        out.append(f'<figure style="max-width:48%"><img src="{_e(src)}" alt="{_e(caption)}">'
                   f"<figcaption>{_e(caption)}</figcaption></figure>")
    out.append("</div>")
    return out
