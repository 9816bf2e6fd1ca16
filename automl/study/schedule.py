"""Nightly tuning: run an ``automl`` command every day at a fixed local time.

Each run is a child process, so a crash or a leak in one night's study never takes
the scheduler down; with ``study_suffix="date"`` each night gets its own study
(``<name>-YYYYMMDD``), otherwise the nights extend one study (finished trials are
kept, its budget is the total). A run still going at the next slot is not doubled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time
from typing import Callable, Sequence

from automl.config.storage import redact_url


def next_run(now: dt.datetime, at: dt.time) -> dt.datetime:
    """The first moment at ``at`` strictly after ``now``."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + dt.timedelta(days=1)


def parse_daily_at(text: str) -> dt.time:
    try:
        return dt.datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise ValueError(f"--daily-at expects HH:MM (24 h), got {text!r}") from None


def nightly_args(args: Sequence[str], day: dt.date, study_suffix: str | None) -> list[str]:
    """The command of one night: ``--study-name`` gets the date when asked."""
    out = list(args)
    if study_suffix == "date":
        stamp = day.strftime("%Y%m%d")
        if "--study-name" in out:
            i = out.index("--study-name") + 1
            out[i] = f"{out[i]}-{stamp}"
        else:
            out += ["--study-name", f"nightly-{stamp}"]
    return out


@dataclasses.dataclass
class NightlyScheduler:
    at: dt.time
    args: list[str]  # automl arguments, e.g. ["run", "--config", "study.yaml"]
    study_suffix: str | None = None
    now: Callable[[], dt.datetime] = dt.datetime.now
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda line: None  # the CLI passes print


    def run_once(self, day: dt.date) -> int:
        cmd = [sys.executable, "-m", "automl", *nightly_args(self.args, day, self.study_suffix)]
        shown = " ".join(redact_url(arg) for arg in cmd[2:])  # a --storage URL may hold a password
        self.log(f"[schedule] {dt.datetime.now():%Y-%m-%d %H:%M} starting: {shown}")
        rc = subprocess.call(cmd)
        self.log(f"[schedule] finished with exit code {rc}")
        return rc

    def run_forever(self, max_runs: int | None = None) -> list[int]:
        codes: list[int] = []
        while max_runs is None or len(codes) < max_runs:
            due = next_run(self.now(), self.at)
            self.log(f"[schedule] next run at {due:%Y-%m-%d %H:%M}")
            while (wait := (due - self.now()).total_seconds()) > 0:
                self.sleep(min(wait, 60.0))
            codes.append(self.run_once(due.date()))
        return codes
