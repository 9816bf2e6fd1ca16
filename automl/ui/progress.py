"""Live progress of a study: trials done, what runs where, epoch, best so far.

The board is the study's observer (:mod:`automl.study.events`): it renders each event.
On a terminal a rich Live table redraws in place; elsewhere (CI, logs, pipes) each
trial event is one plain line, so nothing is lost in a log file. Everything shown is
built as rich ``Text``, never parsed as console markup: study names, paths and trainer
messages carry square brackets (``trucks[v2]``, ``[x, y, width, height]``, ``[/x]``).
"""

from __future__ import annotations

import dataclasses
import threading
import time

from optuna.trial import TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from automl.study.events import (
    Event,
    Findings,
    Level,
    Note,
    StudyClosed,
    StudyStarted,
    StudyStopped,
    TrialEvent,
    TrialFinished,
    TrialsSummary,
)
from automl.ui.findings import render_findings
from automl.ui.summary import render_closing
from automl.ui.tables import trials_table

_NOTE_STYLE = {Level.INFO: "", Level.WARNING: "yellow", Level.ERROR: "red"}


@dataclasses.dataclass
class _Running:
    device: str = ""
    job: str = ""
    epoch: int | None = None
    value: float | None = None
    best: float | None = None


class ProgressBoard:
    """Renders a study's events on ``console``; safe to call from several threads."""

    def __init__(self, console: Console | None = None, metric: str = "val_mAP50", maximize: bool = True) -> None:
        self.console = console or Console()
        self.metric = metric
        self.maximize = maximize
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._counts = {"complete": 0, "pruned": 0, "failed": 0}
        self._best: tuple[int, float] | None = None
        self._live: Live | None = None
        self._started = time.monotonic()
        self._total: int | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Note):
            self.note(event.text, event.level)
        elif isinstance(event, Findings):
            render_findings(event.findings, console=self.console, title=event.title)
        elif isinstance(event, StudyStarted):
            self._start(event)
        elif isinstance(event, StudyStopped):
            self._stop()
        elif isinstance(event, TrialEvent):
            self._trial_event(event)
        elif isinstance(event, TrialFinished):
            self._trial_finished(event)
        elif isinstance(event, TrialsSummary):
            self.console.print(trials_table(event.study_name, event.trials, event.metric, event.best))
        elif isinstance(event, StudyClosed):
            render_closing(event, self.console)

    def note(self, message: str, level: Level = Level.INFO) -> None:
        # soft_wrap: a note is one line in a log however long its paths (the terminal wraps it)
        self.console.print(Text.assemble(("automl", "bold cyan"), " ", (message, _NOTE_STYLE[level])), soft_wrap=True)

    # -- lifecycle ------------------------------------------------------------------
    def _start(self, event: StudyStarted) -> None:
        self._total = event.remaining
        self._started = time.monotonic()
        where = ", ".join(",".join(f"cuda:{d}" for d in s) or "cpu" for s in event.slots)
        total = event.remaining if event.remaining is not None else "unbounded"
        packing = f"; {event.packing}" if event.packing else ""
        self.note(f"study {event.study_name!r}: {total} trial(s) to run on {len(event.slots)} slot(s) "
                  f"[{where}]{packing}")
        if event.best is not None:
            self._best = event.best
        if self.console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2)
            self._live.start()

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- events (called from worker threads) ------------------------------------------
    def _trial_event(self, event: TrialEvent) -> None:
        with self._lock:
            row = self._running.setdefault(event.trial, _Running())
            if event.kind == "started":
                row.device = ",".join(f"cuda:{d}" for d in event.slot) or "cpu"
                row.job = event.message
            elif event.kind == "epoch" and event.value is not None:
                row.epoch, row.value = event.epoch, event.value
                if row.best is None or (event.value > row.best if self.maximize else event.value < row.best):
                    row.best = event.value
            if event.kind in ("completed", "pruned", "failed", "interrupted"):
                self._running.pop(event.trial, None)
        if self._live is None:
            self._print_event(event)

    def _trial_finished(self, event: TrialFinished) -> None:
        with self._lock:
            if event.state == TrialState.COMPLETE and event.value is not None:
                self._counts["complete"] += 1
                value = float(event.value)
                if self._best is None or (value > self._best[1] if self.maximize else value < self._best[1]):
                    self._best = (event.number, value)
            elif event.state == TrialState.PRUNED:
                self._counts["pruned"] += 1
            elif event.state == TrialState.FAIL:
                self._counts["failed"] += 1

    def _print_event(self, event: TrialEvent) -> None:
        value = "" if event.value is None else f" {self.metric}={event.value:.4f}"
        epoch = "" if event.epoch is None else f" epoch {event.epoch}"
        style = {"pruned": "yellow", "failed": "red", "completed": "green", "retry_alone": "yellow"}.get(event.kind, "")
        kind = "" if event.kind == "epoch" else f" {event.kind}"
        text = f"trial {event.trial}{kind}{epoch}{value}"
        if event.kind == "started":
            text += f" on {','.join(f'cuda:{d}' for d in event.slot) or 'cpu'} (job {event.message})"
        elif event.message:
            text += f": {event.message}"
        self.console.print(Text(f"{self._header()} | {text}", style=style), soft_wrap=True)

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
            table.add_column(Text(col))

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        with self._lock:
            for number, row in sorted(self._running.items()):
                table.add_row(*(Text(cell) for cell in (str(number), row.device, row.job,
                                                         "-" if row.epoch is None else str(row.epoch),
                                                         fmt(row.value), fmt(row.best))))
            header = self._header()
        return Group(Text(header, style="bold"), table)
