"""Regular expressions over the job's stdout log.

Each pattern is searched in every complete line. Named groups become metrics: the group
``value`` takes the pattern's metric name (the key when patterns are given as a mapping,
else ``metric``); any other named group is a metric of that name; the group ``epoch``,
if present, is the epoch. Patterns are compiled at construction, so a bad pattern is a
config error before any job starts.

Without an ``epoch`` group, a line matching ``epoch_pattern`` (default: lines starting
with ``Epoch 3``, ``Epoch: [3]``, ``Epoch [3/10]``) announces the epoch that later
metric lines belong to. With neither, epochs count validations from 0: a metric seen
again starts the next epoch.
"""

from __future__ import annotations

import re
from typing import ClassVar, Mapping, Sequence

from metric_extractors.base import EpochMetrics, ExtractorOptionError, LineExtractor, same_value

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"

# What the bundled trainer (and TAO's DINO) print after each validation, and the
# bundled trainer's end-of-epoch line ("Epoch 3/9 done: train_loss 12.3456 ...").
DEFAULT_PATTERNS: dict[str, str] = {
    "val_mAP50": rf"Validation mAP50\s*:\s*(?P<value>{NUMBER})",
    "val_mAP": rf"Validation mAP\s*:\s*(?P<value>{NUMBER})",
    "train_loss": rf"^\s*Epoch\s+\d+(?:/\d+)?\s+done:\s*train_loss\s+(?P<value>{NUMBER})",
}
DEFAULT_EPOCH_PATTERN = r"^\s*Epoch\b\s*:?\s*\[?\s*(?P<epoch>\d+)"


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ExtractorOptionError(f"{where}: a pattern must be a string, got {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ExtractorOptionError(
            f"{where}: {pattern!r} is not a valid regular expression ({exc}). "
            "Use Python `re` syntax, with named groups such as (?P<value>[0-9.]+)."
        ) from None


class RegexExtractor(LineExtractor):
    """Metrics from log lines matched by user patterns.

    ``patterns``: one pattern, a list of patterns (their ``value`` group is named
    ``metric``) or a mapping ``{metric_name: pattern}``; default :data:`DEFAULT_PATTERNS`.
    ``epoch_pattern``: a pattern with an ``epoch`` group, or None to count validations.
    ``source``: ``stdout`` (the job's log) or ``status``.
    """

    name: ClassVar[str] = "regex"
    split_on_cr = True  # progress bars redraw with a bare "\r"

    def __init__(
        self,
        patterns: str | Sequence[str] | Mapping[str, str] | None = None,
        metric: str = "val_mAP50",
        epoch_pattern: str | None = DEFAULT_EPOCH_PATTERN,
        source: str = "stdout",
    ) -> None:
        super().__init__()
        if source not in ("stdout", "status"):
            raise ExtractorOptionError(
                f"metric extractor 'regex': source must be 'stdout' or 'status', got {source!r}"
            )
        self.source = source
        if patterns is None:
            patterns = DEFAULT_PATTERNS
        if isinstance(patterns, str):
            patterns = [patterns]
        named = (
            list(patterns.items())
            if isinstance(patterns, Mapping)
            else [(metric, p) for p in patterns]
        )
        if not named:
            raise ExtractorOptionError("metric extractor 'regex': 'patterns' is empty; give at least one")
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for metric_name, pattern in named:
            compiled = _compile(pattern, f"metric extractor 'regex', pattern for {metric_name!r}")
            if not set(compiled.groupindex) - {"epoch"}:
                raise ExtractorOptionError(
                    f"metric extractor 'regex': pattern {pattern!r} has no named group for a "
                    "value; capture it as (?P<value>...) or (?P<metric_name>...)"
                )
            self._patterns.append((metric_name, compiled))
        self._epoch_pattern = None
        if epoch_pattern is not None:
            self._epoch_pattern = _compile(epoch_pattern, "metric extractor 'regex', epoch_pattern")
            if "epoch" not in self._epoch_pattern.groupindex:
                raise ExtractorOptionError(
                    f"metric extractor 'regex': epoch_pattern {epoch_pattern!r} needs a group "
                    "(?P<epoch>...)"
                )
        self._announced: int | None = None  # epoch from the last epoch line
        self._counted = -1  # epoch when counting validations
        self._epochs: dict[int, dict[str, float]] = {}

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for metric_name, compiled in self._patterns:
            for group in compiled.groupindex:
                name = metric_name if group == "value" else group
                if group != "epoch" and name not in names:
                    names.append(name)
        return names

    def parse_line(self, line: str) -> list[EpochMetrics]:
        if self._epoch_pattern is not None:
            match = self._epoch_pattern.search(line)
            if match and match.group("epoch") is not None:
                try:
                    self._announced = int(match.group("epoch"))
                except ValueError:
                    pass
        values: dict[str, float] = {}
        explicit: int | None = None
        for metric_name, compiled in self._patterns:
            match = compiled.search(line)
            if not match:
                continue
            for group, text in match.groupdict().items():
                if text is None:
                    continue
                if group == "epoch":
                    try:
                        explicit = int(float(text))
                    except ValueError:
                        pass
                    continue
                try:
                    values[metric_name if group == "value" else group] = float(text)
                except ValueError:
                    continue
        if not values:
            return []
        if explicit is not None:
            epoch = explicit
        elif self._announced is not None:
            epoch = self._announced
        else:
            if self._counted < 0 or values.keys() & self._epochs.get(self._counted, {}).keys():
                self._counted += 1
            epoch = self._counted
        return self._record(epoch, values)

    def _record(self, epoch: int, values: dict[str, float]) -> list[EpochMetrics]:
        known = self._epochs.setdefault(epoch, {})
        if all(k in known and same_value(known[k], v) for k, v in values.items()):
            return []
        known.update(values)
        return [EpochMetrics(epoch, dict(known))]
