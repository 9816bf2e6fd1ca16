"""Helpers for the Docker launcher tests (a uniquely named module: test folders have no
``__init__.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
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


# A worker process that launches jobs and then hangs until it is killed.
_WORKER = """
import json, sys, time
from pathlib import Path
from automl.launchers.base import JobSpec
from automl.launchers.docker import DockerLauncher
launcher = DockerLauncher(image=sys.argv[1])
for spec in json.loads(sys.argv[2]):
    handle = launcher.launch(JobSpec(spec["study"], spec["trial"], ("sh", "-c", spec["command"]),
                                     Path(spec["results"]), Path(spec["log"])))
    print(handle.id, flush=True)
time.sleep(600)
"""


def start_worker(image: str, jobs: list[JobSpec]) -> tuple[subprocess.Popen, list[str]]:
    """Launch ``jobs`` from another process (a worker to kill); return it and the container ids."""
    payload = [
        {"study": j.study_name, "trial": j.trial_number, "command": j.command[-1],
         "results": str(j.results_dir), "log": str(j.log_path)}
        for j in jobs
    ]
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, image, json.dumps(payload)],
                            stdout=subprocess.PIPE, text=True)
    ids = [proc.stdout.readline().strip() for _ in jobs]
    if not all(ids):
        proc.kill()
        raise AssertionError(f"the worker did not launch its jobs (exit {proc.wait()})")
    return proc, ids
