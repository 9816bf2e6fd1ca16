"""TAO's ``status.json``: JSON Lines appended to ``<results_dir>/<task>/status.json``.

Every line has ``date`` (M/D/YYYY), ``time`` (H:M:S, unpadded, local), ``status``
(STARTED / RUNNING / SUCCESS / FAILURE / SKIPPED), ``verbosity`` (INFO, WARNING, ...) and
``message``. Once set, ``kpi`` repeats on every later line, as TAO's logger does. Epoch
lines add ``epoch`` (0-based, as TAO's Lightning callback), ``max_epoch`` (num_epochs - 1),
``step``, ``max_step``, ``time_per_epoch``, ``time_per_step`` and ``eta`` (``str(timedelta)``).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

STATUSES = ("STARTED", "RUNNING", "SUCCESS", "FAILURE", "SKIPPED")
VERBOSITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class StatusLog:
    """Appends one JSON object per line; each line is written with a single ``write`` and
    flushed, so a reader tailing the file never sees half of one from a live writer."""

    def __init__(self, path: str):
        self.path = path
        self.kpi: dict[str, Any] = {}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, message: str, status: str = "RUNNING", verbosity: str = "INFO", **data: Any) -> dict[str, Any]:
        assert status in STATUSES and verbosity in VERBOSITIES, (status, verbosity)
        now = datetime.datetime.now()
        line = dict(data)
        line.update(date=f"{now.month}/{now.day}/{now.year}", time=f"{now.hour}:{now.minute}:{now.second}",
                    status=status, verbosity=verbosity, message=message)
        if self.kpi:
            line["kpi"] = dict(self.kpi)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
        return line


def read_status(path: str) -> list[dict[str, Any]]:
    """All complete lines of a status file (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return out
