"""Byte progress bars (rich, on stderr) for downloads and extraction of big archives."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

# below this, a bar would only flicker
BIG_BYTES = 64 * 1024 * 1024


@contextlib.contextmanager
def byte_progress(description: str, total: int, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; draws a bar when ``enabled`` (None: only for big totals).

    ``advance`` is thread-safe (boto3 calls it from its transfer threads).
    """
    show = (total >= BIG_BYTES) if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),  # a file or key name, shown as it is
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
