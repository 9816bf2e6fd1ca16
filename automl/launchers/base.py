"""The launcher protocol: start, watch and stop one training job.

A launcher knows nothing about metrics or Optuna. It runs a command, captures the
job's combined stdout/stderr into ``JobSpec.log_path`` on the host (the monitor tails
that file), and reports the exit code. Paths are the same inside and outside a
container: launchers that isolate the job mount each path at its own location, so a
rendered ``spec.yaml`` is valid for every launcher.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from automl.launchers.warm import WarmTrainer


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything a launcher needs to run one trial's training job."""

    study_name: str
    trial_number: int
    command: tuple[str, ...]  # e.g. ("dino", "train", "-e", "/ws/trial_0003/spec.yaml")
    results_dir: Path  # writable; the job's results_dir (status.json under train/)
    log_path: Path  # host file receiving the job's combined stdout/stderr
    devices: tuple[int, ...] = ()  # GPU indices of this job's slot; () means CPU
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    read_only_paths: tuple[Path, ...] = ()  # datasets, pretrained weights
    workdir: Path | None = None
    # writable folders every job of the workspace shares (compiled-kernel caches); a
    # launcher that isolates jobs mounts them read-write at the same path
    cache_dirs: tuple[Path, ...] = ()
    # how the trainer can be started ahead of the job (``dino warm``); None: it cannot.
    # Only the local launcher uses it (automl.launchers.warm)
    warm: WarmTrainer | None = None


@dataclasses.dataclass(frozen=True)
class JobResult:
    exit_code: int
    oom_killed: bool = False  # killed by the kernel/container OOM killer
    stopped: bool = False  # we stopped it (pruned or interrupted)


@runtime_checkable
class JobHandle(Protocol):
    """A running job."""

    job: JobSpec

    @property
    def id(self) -> str:
        """Process id or container id, stored in the trial's user attributes."""

    @property
    def result(self) -> JobResult | None:
        """The result once the job was seen to end, else None (does not look again)."""

    def poll(self) -> JobResult | None:
        """The result if the job has ended, else None. Never blocks."""

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; ``TimeoutError`` after ``timeout`` s (the job runs on)."""

    def stop(self, grace_period: float = 10.0) -> JobResult:
        """Ask the job to end (SIGTERM), kill it after ``grace_period`` s, wait, return."""


def wait_by_polling(handle: JobHandle, timeout: float | None, interval: float) -> JobResult:
    """:meth:`JobHandle.wait` for handles whose only way to know is to poll."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (result := handle.poll()) is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {handle.id} of trial {handle.job.trial_number} still running after {timeout} s")
        time.sleep(interval)
    return result


@runtime_checkable
class Launcher(Protocol):
    """Starts jobs. Chosen by name in the run config (``local``, ``docker``)."""

    name: str

    def launch(self, job: JobSpec) -> JobHandle:
        """Start ``job`` and return at once."""

    def reap_orphans(self, study_name: str, keep_trial_numbers: set[int]) -> list[str]:
        """Stop jobs of ``study_name`` left by dead workers; return what was stopped."""
