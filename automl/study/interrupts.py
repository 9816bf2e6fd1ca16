"""Ctrl-C and SIGTERM during a study: stop the running jobs, keep their trials.

Every signal only sets the run's stop event and asks Optuna to start no new trial; the
objective threads see the event, stop their jobs (SIGTERM, then SIGKILL after
``launcher.grace_period``), mark their trials interrupted and the runner queues each for
a retry that resumes from its checkpoint. Nothing is raised inside the main thread,
which may be in the middle of a storage write or of stopping a job: a second Ctrl-C
0.3 s after the first used to raise KeyboardInterrupt there, and the trial ended FAILED
with no reason and no retry. Further signals change nothing but are counted, so the run
can say it is already stopping.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import optuna

from automl.optuna_private import request_stop

_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupts:
    """Installed for a ``with`` block in the main thread (elsewhere it does nothing)."""

    def __init__(self, stop_event: threading.Event) -> None:
        self.stop_event = stop_event
        self.study: optuna.Study | None = None  # set once the study is open: no new trial starts
        self.count = 0
        self.first: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in _NAMES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.first is None:
            self.first = signum
        self.stop_event.set()
        if self.study is not None:
            request_stop(self.study)

    @property
    def interrupted(self) -> bool:
        return self.first is not None

    def reason(self) -> str | None:
        """``"SIGINT (Ctrl-C)"`` (with the count when repeated), or None."""
        if self.first is None:
            return None
        name = _NAMES.get(signal.Signals(self.first), signal.Signals(self.first).name)
        return name if self.count == 1 else f"{name}, {self.count} signals"
