"""A job's peak GPU memory, from its ``status.json``: what ``auto`` packing decides on.

The bundled trainer adds ``peak_gpu_memory_mib`` (``torch.cuda.max_memory_reserved`` of
its device, in MiB) to every epoch line. This reader tails the file on its own, whatever
extractor reads the metric (a ``regex`` extractor never looks at status.json), reading
only the bytes appended since the last poll.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from automl.observe.monitor import STATUS_RELPATH, LogTail

PEAK_FIELD = "peak_gpu_memory_mib"


class PeakMemoryReader:
    """The largest ``peak_gpu_memory_mib`` in ``<results_dir>/train/status.json`` so far."""

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.tail = LogTail(Path(results_dir) / STATUS_RELPATH)
        self.peak_mib: int | None = None
        self._partial = b""
        self._generation = self.tail.generation

    def poll(self) -> int | None:
        """Read what was appended; the peak so far (None until a line carried one)."""
        data = self.tail.read()
        if self.tail.generation != self._generation:  # truncated or replaced: a new file
            self._generation, self._partial = self.tail.generation, b""
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            if PEAK_FIELD.encode() not in raw:
                continue
            try:
                value = json.loads(raw).get(PEAK_FIELD)
            except (ValueError, AttributeError):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                self.peak_mib = max(self.peak_mib or 0, int(value))
        return self.peak_mib

    def close(self) -> None:
        self.tail.close()
