"""Live progress of a study: trials done, what runs where, epoch, best so far.

On a terminal a rich Live table redraws in place; elsewhere (CI, logs, pipes) each
event is one plain line, so nothing is lost in a log file.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from automl.objective import TrialEvent
    from automl.slots import SlotPool


class ProgressBoard:
    def __init__(self, console: Console | None = None, metric: str = "val_mAP50", maximize: bool = True) -> None:
        self.console = console or Console()
        self.metric = metric
        self.maximize = maximize
        self._lock = threading.Lock()
        self._running: dict[int, dict[str, object]] = {}
        self._counts = {"complete": 0, "pruned": 0, "failed": 0}
        self._best: tuple[int, float] | None = None
        self._live: Live | None = None
        self._started = time.monotonic()
        self._total: int | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self, study: optuna.Study, slots: "SlotPool", remaining: int | None) -> None:
        self._total = remaining
        self._started = time.monotonic()
        where = ", ".join(",".join(f"cuda:{d}" for d in s) or "cpu" for s in slots.slots)
        self.note(
            f"study {study.study_name!r}: {remaining if remaining is not None else 'unbounded'} trial(s) "
            f"to run on {slots.size} slot(s) [{where}]"
        )
        if study.best_trials:
            self._best = (study.best_trial.number, float(study.best_value))
        if self.console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def note(self, message: str) -> None:
        self.console.print(f"[bold cyan]automl[/] {message}", highlight=False)

    # -- events (called from worker threads) ------------------------------------------
    def on_trial_event(self, event: "TrialEvent") -> None:
        with self._lock:
            row = self._running.setdefault(event.trial, {"device": "", "epoch": "-", "value": None, "best": None})
            if event.kind == "started":
                row["device"] = ",".join(f"cuda:{d}" for d in event.slot) or "cpu"
                row["job"] = event.message
            elif event.kind == "epoch":
                row["epoch"] = event.epoch
                row["value"] = event.value
                best = row["best"]
                if best is None or (event.value > best if self.maximize else event.value < best):
                    row["best"] = event.value
            if event.kind in ("completed", "pruned", "failed", "interrupted"):
                self._running.pop(event.trial, None)
        if self._live is None:
            self._print_event(event)

    def on_trial_finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            if trial.state == TrialState.COMPLETE:
                self._counts["complete"] += 1
                value = float(trial.value)
                if self._best is None or (value > self._best[1] if self.maximize else value < self._best[1]):
                    self._best = (trial.number, value)
            elif trial.state == TrialState.PRUNED:
                self._counts["pruned"] += 1
            elif trial.state == TrialState.FAIL:
                self._counts["failed"] += 1

    def _print_event(self, event: "TrialEvent") -> None:
        value = "" if event.value is None else f" {self.metric}={event.value:.4f}"
        epoch = "" if event.epoch is None else f" epoch {event.epoch}"
        style = {"pruned": "yellow", "failed": "red", "completed": "green"}.get(event.kind, "")
        kind = "" if event.kind == "epoch" else f" {event.kind}"
        text = f"trial {event.trial}{kind}{epoch}{value}"
        if event.kind == "started":
            text += f" on {','.join(f'cuda:{d}' for d in event.slot) or 'cpu'} (job {event.message})"
        elif event.message and event.kind != "started":
            text += f": {event.message}"
        self.console.print(Text(f"{self._header()} | {text}", style=style))

    def _header(self) -> str:
        c = self._counts
        done = c["complete"] + c["pruned"] + c["failed"]
        total = "?" if self._total is None else self._total
        best = "-" if self._best is None else f"{self._best[1]:.4f} (trial {self._best[0]})"
        elapsed = time.monotonic() - self._started
        return (
            f"[{done}/{total} done: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed; "
            f"best {self.metric} {best}; {elapsed:.0f}s]"
        )

    def _render(self) -> Group:
        table = Table(title="running trials", expand=False)
        for col in ("trial", "device", "job", "epoch", self.metric, "best so far"):
            table.add_column(col)
        with self._lock:
            for number, row in sorted(self._running.items()):
                fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
                table.add_row(str(number), str(row["device"]), str(row.get("job", "")),
                              str(row["epoch"]), fmt(row["value"]), fmt(row["best"]))
            header = self._header()
        return Group(Text(header, style="bold"), table)
