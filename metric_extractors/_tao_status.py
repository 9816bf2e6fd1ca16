"""TAO ``status.json``: JSON Lines appended by the trainer's rank 0.

What the format does that this extractor copes with (see DESIGN.md):

- ``kpi`` values arrive as strings (``"0.4312"``) or numbers; non-numeric ones are
  skipped.
- The logger is sticky: the last ``kpi`` dict is repeated on every later line, with or
  without an ``epoch`` key, until a new one replaces it (training then writes
  ``{"train_loss": ...}``, validation ``{"val_mAP": ..., "val_mAP50": ...}``).
- A validation's kpi line may carry no ``epoch``; the epoch line that follows does.

Rules: a line with ``epoch: E`` attributes its kpi (plus the kpi dicts held from the
epoch-less lines before it) to ``E``. An epoch-less line whose values equal the previous
line's is a sticky repeat and adds nothing; otherwise its values are held until the next
epoch line (or, if a held metric shows up again first, the held ones go to the epoch in
progress). Each epoch is emitted once, and again only if its values changed. So two
validations with identical values (mAP 0.0 early in training) still give one report per
epoch. With ``validation_interval > 1`` the sticky kpi on an epoch line makes
non-validation epochs repeat the last validation's values.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Sequence

from metric_extractors.base import EpochMetrics, LineExtractor, same_value


def to_float(value: Any) -> float | None:
    """``"0.43"``, ``0.43``, ``"nan"`` -> float; bools, dicts, junk -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _same_dict(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)


def to_epoch(value: Any) -> int | None:
    number = to_float(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


class TaoStatusExtractor(LineExtractor):
    """Reads ``<results_dir>/train/status.json`` incrementally.

    ``sections``: top-level dicts whose numeric entries are metrics (TAO puts them in
    ``kpi``). ``top_level_keys``: numeric top-level keys also taken as metrics (some
    writers put ``train_loss`` beside ``epoch``).
    """

    name: ClassVar[str] = "tao_status"
    source = "status"

    def __init__(
        self,
        sections: Sequence[str] = ("kpi",),
        top_level_keys: Sequence[str] = ("train_loss", "val_loss"),
    ) -> None:
        super().__init__()
        self.sections = tuple(sections)
        self.top_level_keys = tuple(top_level_keys)
        self._previous: dict[str, float] = {}  # values of the last line that had any
        self._pending: dict[str, float] = {}  # fresh values waiting for an epoch line
        self._last_epoch: int | None = None
        self._epochs: dict[int, dict[str, float]] = {}  # everything emitted, per epoch

    def parse_line(self, line: str) -> list[EpochMetrics]:
        line = line.strip()
        if not line.startswith("{"):
            return []
        try:
            record = json.loads(line)
        except ValueError:  # a line cut mid-way, or junk
            return []
        if not isinstance(record, dict):
            return []
        values = self._values(record)
        epoch = to_epoch(record.get("epoch"))
        repeat = _same_dict(values, self._previous)
        if values:
            self._previous = values
        if epoch is None:
            if repeat or not values:
                return []  # the sticky kpi of an earlier line
            # a new kpi dict: a validation or a training summary of the epoch in progress
            out = self.flush_pending() if values.keys() & self._pending.keys() else []
            self._pending.update(values)
            return out
        self._last_epoch = epoch
        merged = {**self._pending, **values}
        self._pending = {}
        return self._record(epoch, merged)

    def flush(self) -> list[EpochMetrics]:
        return super().flush() + self.flush_pending()

    def flush_pending(self) -> list[EpochMetrics]:
        """Attribute held epoch-less values to the epoch in progress."""
        if not self._pending:
            return []
        if self._last_epoch is not None:
            epoch = self._last_epoch + 1
        else:  # no epoch line ever: count validations from 0
            epoch = max(self._epochs, default=-1) + 1
        pending, self._pending = self._pending, {}
        return self._record(epoch, pending)

    def _values(self, record: dict[str, Any]) -> dict[str, float]:
        values: dict[str, float] = {}
        for key in self.top_level_keys:
            number = to_float(record.get(key))
            if number is not None:
                values[key] = number
        for section in self.sections:
            block = record.get(section)
            if isinstance(block, dict):
                for key, raw in block.items():
                    number = to_float(raw)
                    if number is not None:
                        values[str(key)] = number
        return values

    def _record(self, epoch: int, values: dict[str, float]) -> list[EpochMetrics]:
        if not values:
            return []
        known = self._epochs.setdefault(epoch, {})
        if all(k in known and same_value(known[k], v) for k, v in values.items()):
            return []
        known.update(values)
        return [EpochMetrics(epoch, dict(known))]
