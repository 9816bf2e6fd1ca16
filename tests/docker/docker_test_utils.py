"""Helpers for the Docker launcher tests (a uniquely named module: test folders have no
``__init__.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from automl.launchers.base import JobSpec


def job(study: str, trial: int, command: str, root: Path, **fields) -> JobSpec:
    """A JobSpec running ``sh -c command`` with its results in ``root/trial_<n>``."""
    results = root / f"trial_{trial}"
    return JobSpec(study, trial, ("sh", "-c", command), results, results / "stdout.log", **fields)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def job_output(log_path: Path) -> str:
    """The job's own output: the log minus the launcher's ``[automl]`` lines."""
    return "".join(
        line for line in log_path.read_text().splitlines(keepends=True) if not line.startswith("[automl]")
    )
