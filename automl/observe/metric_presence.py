"""When a metric that has not appeared is missing rather than late.

A metric name the extractor never finds (a typo, another trainer's spelling, a regex
that no longer matches) used to cost every trial its full training before the study
stopped. The trainer validates first after ``train.validation_interval`` epochs, so
once that epoch is over without the metric, it will not come: the trial fails at once,
saying what the extractor did see, and the study stops.

"Epoch over" comes from the trainer's ``train/status.json`` epoch lines (TAO's contract;
read before the extractor polls, so every metric line written before them is read too),
or, for a trainer without one, from the extractor itself: an epoch is over when a later
epoch's metrics appear. An extractor reading another file than ``status.json`` (stdout,
which a container's log stream may deliver late) gets ``grace_s`` more seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from automl.observe.monitor import STATUS_RELPATH, LogTail
from dino.config.yaml_values import load_yaml
from metric_extractors import EpochMetrics


def first_validation_epoch(spec_path: Path) -> int:
    """The 0-based epoch after which the trainer first validates, from the trial's spec
    (``train.validation_interval``, capped by ``train.num_epochs``; TAO's defaults: 1)."""
    try:
        spec: Any = load_yaml(Path(spec_path).read_text())
    except (OSError, yaml.YAMLError):
        spec = None
    train = spec.get("train") if isinstance(spec, dict) else None
    train = train if isinstance(train, dict) else {}

    def positive(key: str, default: int) -> int:
        value = train.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else default

    return min(positive("validation_interval", 1), positive("num_epochs", 10**9)) - 1


class _EpochLines:
    """The largest ``epoch`` among the complete lines of a growing ``status.json``."""

    def __init__(self, path: Path) -> None:
        self.tail = LogTail(path)
        self.partial = b""
        self.last: int | None = None

    @property
    def exists(self) -> bool:
        return self.tail.path.exists()

    def poll(self) -> int | None:
        data = self.partial + self.tail.read()
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if b'"epoch"' not in line:
                continue
            try:
                epoch = json.loads(line).get("epoch")
            except (ValueError, AttributeError):
                continue
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                self.last = epoch if self.last is None else max(self.last, epoch)
        return self.last

    def close(self) -> None:
        self.tail.close()


class MetricPresence:
    """Fed every poll's progress and extracted epochs; :meth:`missing` says when to give up."""

    def __init__(
        self,
        metric: str,
        first_validation: int,
        results_dir: Path,
        *,
        same_file: bool,
        grace_s: float,
        already_seen: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metric = metric
        self.first_validation = first_validation
        self.grace_s = 0.0 if same_file else grace_s
        self.seen = already_seen
        self._clock = clock
        self._status = _EpochLines(Path(results_dir) / STATUS_RELPATH)
        self._extracted: int | None = None  # largest epoch the extractor reported anything for
        self._over_since: float | None = None
        self.finished_epoch: int | None = None

    def advance(self) -> None:
        """Read the trainer's progress; call before polling the extractor."""
        from_status = self._status.poll()
        if from_status is not None:
            self.finished_epoch = from_status
        elif self._extracted is not None and not self._status.exists:
            self.finished_epoch = self._extracted - 1  # an epoch is over when a later one reports

    def note(self, epochs: list[EpochMetrics]) -> None:
        for item in epochs:
            if self.metric in item.values:
                self.seen = True
            self._extracted = item.epoch if self._extracted is None else max(self._extracted, item.epoch)

    def missing(self) -> bool:
        if self.seen or self.finished_epoch is None or self.finished_epoch < self.first_validation:
            return False
        if self.finished_epoch > self.first_validation:
            return True  # a whole epoch later: not late, missing
        now = self._clock()
        if self._over_since is None:
            self._over_since = now
        return now - self._over_since >= self.grace_s

    def close(self) -> None:
        self._status.close()
