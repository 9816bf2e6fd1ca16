"""Watch a running trial: tail its log's new bytes and turn them into epoch metrics.

The cost of a poll is proportional to the bytes appended since the last one, never
to the file's size: the tail keeps its offset and reads with ``pread`` from there, so
a 1 GB log is as cheap to watch as a 1 kB one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from metric_extractors import EpochMetrics, MetricExtractor

STATUS_RELPATH = Path("train") / "status.json"
_CHUNK = 4 << 20  # bytes per read


class LogTail:
    """Reads only what was appended to ``path`` since the previous :meth:`read`.

    The file may not exist yet (a job that has not started writing). If it shrinks
    (truncated) or is replaced (rotated: a new inode at the same path), reading restarts
    at byte 0 of the current file and :attr:`generation` increases, so a consumer can
    drop a partial line that belonged to the old content.
    """

    def __init__(self, path: str | os.PathLike[str], *, start_at_end: bool = False) -> None:
        self.path = Path(path)
        self.offset = 0
        self.generation = 0
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        if start_at_end:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                pass  # a file that appears later is read from its start
            else:
                self._open()
                self.offset = st.st_size

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        self.close()
        st = os.fstat(fd)
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        return True

    def _check_replaced(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return  # deleted: keep reading what the open descriptor still holds
        if self._fd is None or (st.st_dev, st.st_ino) != self._ino:
            had_file = self._fd is not None
            if self._open():
                if had_file:
                    self.generation += 1
                self.offset = 0

    def read(self, max_bytes: int = 64 << 20) -> bytes:
        """Up to ``max_bytes`` new bytes (b"" when nothing is new or no file yet)."""
        self._check_replaced()
        if self._fd is None:
            return b""
        size = os.fstat(self._fd).st_size
        if size < self.offset:  # truncated in place
            self.offset = 0
            self.generation += 1
        chunks: list[bytes] = []
        want = min(size - self.offset, max_bytes)
        while want > 0:
            chunk = os.pread(self._fd, min(want, _CHUNK), self.offset)
            if not chunk:
                break
            chunks.append(chunk)
            self.offset += len(chunk)
            want -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class SeenSummary:
    """What an extractor was shown, for a 'metric never appeared' diagnosis."""

    extractor: str
    source: str
    path: Path
    exists: bool
    bytes_read: int
    lines: int
    last_lines: tuple[str, ...]
    metric_names: tuple[str, ...]
    epochs: tuple[int, ...]

    def describe(self, metric: str | None = None) -> str:
        head = f"metric {metric!r} never appeared: " if metric else ""
        if not self.exists:
            return (
                f"{head}extractor {self.extractor!r} reads {self.source} file {self.path}, "
                "which the job never created"
            )
        found = ", ".join(self.metric_names) or "none"
        text = (
            f"{head}extractor {self.extractor!r} read {self.bytes_read:,} bytes "
            f"({self.lines:,} lines) of {self.path}; metrics it found: {found}"
        )
        if self.epochs:
            text += f" (epochs {self.epochs[0]}..{self.epochs[-1]})"
        if self.last_lines:
            text += "; last lines:\n" + "\n".join(f"  | {line}" for line in self.last_lines)
        return text

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data


class TrialMonitor:
    """Tails the file ``extractor.source`` names and feeds its new bytes to ``extractor``.

    ``source == "status"`` reads ``<results_dir>/train/status.json``; ``"stdout"`` reads
    ``log_path``. ``from_start=False`` ignores what the file held already.
    """

    def __init__(
        self,
        results_dir: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        extractor: MetricExtractor,
        *,
        from_start: bool = True,
        max_bytes_per_poll: int = 256 << 20,
        keep_last_lines: int = 12,
    ) -> None:
        self.extractor = extractor
        self.results_dir = Path(results_dir)
        if extractor.source == "status":
            self.path = Path(results_dir) / STATUS_RELPATH
        elif extractor.source == "stdout":
            self.path = Path(log_path)
        else:
            raise ValueError(f"extractor {extractor.name!r} has unknown source {extractor.source!r}")
        self.tail = LogTail(self.path, start_at_end=not from_start)
        self.max_bytes_per_poll = max_bytes_per_poll
        self._keep_last_lines = keep_last_lines
        self._generation = self.tail.generation
        self._bytes = 0
        self._lines = 0
        self._recent = b""  # the last few KB read, for last_lines
        self._names: dict[str, None] = {}
        self._epochs: dict[int, None] = {}

    def poll(self) -> list[EpochMetrics]:
        """Metrics completed by the bytes appended since the last poll. Never blocks."""
        data = self.tail.read(self.max_bytes_per_poll)
        out: list[EpochMetrics] = []
        if self.tail.generation != self._generation:
            self._generation = self.tail.generation
            # a partial line of the old content must not be glued to the new content
            out += self.extractor.restart()
        if data:
            self._bytes += len(data)
            self._lines += data.count(b"\n")
            self._recent = (self._recent + data)[-8192:]
            out += self.extractor.feed(data)
        return self._note(out)

    def finish(self) -> list[EpochMetrics]:
        """After the job exited: read everything left, then parse an unterminated line."""
        out: list[EpochMetrics] = []
        while True:
            before = self.tail.offset
            out += self.poll()
            if self.tail.offset == before:
                break
        out += self._note(self.extractor.flush())
        return out

    def _note(self, metrics: list[EpochMetrics]) -> list[EpochMetrics]:
        for item in metrics:
            self._epochs[item.epoch] = None
            for name in item.values:
                self._names[name] = None
        return metrics

    def seen_summary(self) -> SeenSummary:
        text = self._recent.decode("utf-8", errors="replace")
        lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if len(self._recent) == 8192 and lines:
            lines = lines[1:]  # the first one is probably cut
        return SeenSummary(
            extractor=self.extractor.name,
            source=self.extractor.source,
            path=self.path,
            exists=self.path.exists(),
            bytes_read=self._bytes,
            lines=self._lines,
            last_lines=tuple(line[:300] for line in lines[-self._keep_last_lines :]),
            metric_names=tuple(self._names),
            epochs=tuple(sorted(self._epochs)),
        )

    def status_lines(self, max_lines: int = 100) -> list[dict[str, Any]]:
        """The last lines of the job's ``status.json`` (for :func:`automl.observe.diagnosis.diagnose`)."""
        return read_status_lines(self.results_dir, max_lines)

    def close(self) -> None:
        self.tail.close()


def read_tail_text(path: str | os.PathLike[str], max_bytes: int = 64 << 10) -> str:
    """The last ``max_bytes`` of a file as text ("" if missing), for diagnosis."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    if len(data) == max_bytes and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]  # drop the cut first line
    return data.decode("utf-8", errors="replace")


def read_status_lines(
    results_dir: str | os.PathLike[str], max_lines: int = 100, max_bytes: int = 256 << 10
) -> list[dict[str, Any]]:
    """The last parseable JSON lines of ``<results_dir>/train/status.json``."""
    records: list[dict[str, Any]] = []
    for line in read_tail_text(Path(results_dir) / STATUS_RELPATH, max_bytes).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records[-max_lines:]
