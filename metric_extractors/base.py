"""The extractor protocol: log bytes in, ``(epoch, {metric: value})`` out.

An extractor is fed the bytes a job appended to one file since the last call, in
arbitrary chunks: a chunk may end mid-line, mid-UTF-8 character or between ``\\r`` and
``\\n``. It keeps the partial last line and parses only complete ones, so the monitor
can hand it whatever ``read()`` returned. It knows nothing about Optuna or launchers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

Source = Literal["status", "stdout"]
SOURCES: tuple[str, ...] = ("status", "stdout")  # status: <results_dir>/train/status.json


class ExtractorOptionError(ValueError):
    """An extractor's options cannot work; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    """Metrics known for one epoch so far.

    An epoch may be emitted more than once as its metrics arrive (``train_loss`` first,
    ``val_mAP50`` after validation); each emission carries everything known for it.
    """

    epoch: int
    values: dict[str, float]


class MetricExtractor:
    """Base of every extractor (user extractors subclass it, or :class:`LineExtractor`).

    ``feed`` is the one method to write. The two hooks have defaults here, so the
    monitor calls them on any extractor without probing for them.
    """

    name: ClassVar[str] = "extractor"
    source: str = "stdout"  # which file: "status" (train/status.json) or "stdout" (the job's log)

    @property
    def metric_names(self) -> list[str] | None:
        """The metrics this extractor can ever produce, when known before the job runs
        (a regex knows its groups), else None. A study whose metric is not among them is
        refused before any trial."""
        return None

    def feed(self, data: bytes) -> list[EpochMetrics]:
        """Consume newly appended bytes; return metrics completed by them."""
        raise NotImplementedError(f"{type(self).__name__} must define feed(data)")

    def flush(self) -> list[EpochMetrics]:
        """The writer has exited: return what an unterminated last line completes."""
        return []

    def restart(self) -> list[EpochMetrics]:
        """The file was truncated or replaced, and reading starts again at its first byte.

        The default ends a partial line (as if a newline had been written) so that it is
        not glued to the new content; :class:`LineExtractor` drops it instead.
        """
        return self.feed(b"\n")


class LineExtractor(MetricExtractor):
    """Base for line-oriented extractors: splits chunks into complete lines.

    Subclasses implement :meth:`parse_line`. Lines end at ``\\n`` (``\\r\\n`` and a lone
    ``\\r`` too when ``split_on_cr``, which suits stdout with progress bars). Undecodable
    bytes become U+FFFD. A partial line longer than ``max_line_bytes`` keeps only its
    tail, so a writer that never prints a newline cannot grow memory without bound.
    """

    name: ClassVar[str] = "line"
    split_on_cr: ClassVar[bool] = False
    max_line_bytes: ClassVar[int] = 1 << 20

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[EpochMetrics]:
        if not data:
            return []
        buf = self._partial + data
        if self.split_on_cr:
            # A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r", 0, len(buf) - 1))
        else:
            cut = buf.rfind(b"\n")
        if cut < 0:
            self._partial = buf[-self.max_line_bytes :]
            return []
        complete, self._partial = buf[: cut + 1], buf[cut + 1 :][-self.max_line_bytes :]
        return self._parse_block(complete)

    def flush(self) -> list[EpochMetrics]:
        """Parse the unterminated last line (call once the writer has exited)."""
        rest, self._partial = self._partial, b""
        return self._parse_block(rest) if rest.strip() else []

    def restart(self) -> list[EpochMetrics]:
        """Forget an unterminated line: it belonged to the old content."""
        self._partial = b""
        return []

    def _parse_block(self, block: bytes) -> list[EpochMetrics]:
        text = block.decode("utf-8", errors="replace")
        lines = text.splitlines() if self.split_on_cr else text.split("\n")
        out: list[EpochMetrics] = []
        for line in lines:
            line = line.rstrip("\r")
            if line.strip():
                out.extend(self.parse_line(line))
        return out

    def parse_line(self, line: str) -> list[EpochMetrics]:  # pragma: no cover - abstract
        raise NotImplementedError


def same_value(a: float | None, b: float | None) -> bool:
    """Equality that treats NaN as equal to NaN (a diverged loss repeats as NaN)."""
    if a is None or b is None:
        return a is b
    return a == b or (a != a and b != b)
