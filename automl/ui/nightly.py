"""What the nightly shows a person: the history of nights as a table, one night's outcome,
and the scheduler's events as log lines."""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from rich.markup import escape
from rich.table import Table

from automl.config.durations import format_duration
from automl.study.night_record import NightRecord
from automl.study.schedule import NextRun, RunFinished, RunSkipped, RunStarting, ScheduleEvent

_STATUS_STYLE = {"done": "", "crashed": "red", "died": "red", "interrupted": "yellow", "skipped": "dim",
                 "running": "cyan"}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _trials(record: NightRecord) -> str:
    if not record.trials:
        return "-"
    c = record.trials
    return f"{c.get('complete', 0)}/{c.get('pruned', 0)}/{c.get('fail', 0)}"


def _started(record: NightRecord) -> str:
    try:
        return dt.datetime.fromisoformat(record.started_at).strftime("%m-%d %H:%M")
    except ValueError:
        return record.started_at


def history_table(records: Sequence[NightRecord], live_run_ids: set[str], metric: str) -> Table:
    """One row per night: what ran, its best value, the two held-out scores, promoted or
    not and why, how long it took. ``live_run_ids``: nights whose process still runs."""
    table = Table(title="nightly runs")
    for col in ("night", "started", "study", "status", "trials c/p/f", "best"):
        table.add_column(col, no_wrap=True)
    table.add_column(f"night's best {metric}", no_wrap=True)
    table.add_column(f"champion {metric}", no_wrap=True)
    table.add_column("promoted", no_wrap=True)
    table.add_column("why", max_width=60, overflow="fold")
    table.add_column("took", no_wrap=True)
    for r in records:
        status = r.display_status(r.run_id in live_run_ids)
        why = r.error if status == "crashed" and r.error else r.reason
        if status == "died":
            why = "no end record: the process was killed or the machine went down; the champion is unchanged"
        took = format_duration(r.durations["total"]) if "total" in r.durations else "-"
        if r.stopped_on_time:
            took += " (budget)"
        table.add_row(r.night, _started(r), escape(r.study), status, _trials(r), _num(r.best_value),
                      _num(r.evaluation.candidate), _num(r.evaluation.champion),
                      "yes" if r.promoted else "no", escape(why or ""), took, style=_STATUS_STYLE.get(status, ""))
    return table


def night_summary(record: NightRecord) -> str:
    """The closing lines of ``automl nightly``."""
    lines = [f"night {record.night} ({record.study}): {record.status}"]
    if record.status == "skipped":
        lines.append(f"  {record.reason}")
        return "\n".join(lines)
    if record.trials:
        lines.append(f"  trials: {_trials(record)} complete/pruned/failed"
                     + (", stopped on time by the budget" if record.stopped_on_time else ""))
    if record.best_trial is not None:
        lines.append(f"  night's best: trial {record.best_trial}, {record.study_metric}={_num(record.best_value)}")
    ev = record.evaluation
    if ev.metric:
        lines.append(f"  held-out {ev.metric}: night's best {_num(ev.candidate)}, "
                     f"champion {_num(ev.champion)}" + (f" ({ev.champion_name})" if ev.champion_name else ""))
    lines.append(f"  {'promoted' if record.promoted else 'champion kept'}: {record.reason}")
    if record.error:
        lines.append(f"  error: {record.error}")
    steps = ", ".join(f"{k} {format_duration(v)}" for k, v in record.durations.items() if k != "total")
    if steps:
        lines.append(f"  durations: {steps}; total {format_duration(record.durations.get('total', 0.0))}")
    return "\n".join(lines)


def schedule_line(event: ScheduleEvent) -> str:
    """One log line per scheduler event."""
    if isinstance(event, NextRun):
        return f"[schedule] next run at {event.due:%Y-%m-%d %H:%M %Z}"
    if isinstance(event, RunStarting):
        late = f" ({format_duration(event.late_s)} late: catching up a missed run)" if event.late_s >= 60 else ""
        return f"[schedule] {event.slot:%Y-%m-%d %H:%M %Z} starting{late}: automl {' '.join(event.command)}"
    if isinstance(event, RunFinished):
        over = ", stopped: it overran its budget" if event.stopped else ""
        return (f"[schedule] {event.slot:%Y-%m-%d %H:%M %Z} finished with exit code {event.exit_code} "
                f"after {format_duration(event.duration_s)}{over}")
    if isinstance(event, RunSkipped):
        return f"[schedule] {event.slot:%Y-%m-%d %H:%M %Z} skipped: {event.reason}"
    raise TypeError(f"not a schedule event: {event!r}")
