"""The launcher protocol: start, watch and stop one training job.

A launcher knows nothing about metrics or Optuna. It runs a command, captures the
job's combined stdout/stderr into ``JobSpec.log_path`` on the host (the monitor tails
that file), and reports the exit code. Paths are the same inside and outside a
container: launchers that isolate the job mount each path at its own location, so a
rendered ``spec.yaml`` is valid for every launcher.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, runtime_checkable


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

    def poll(self) -> JobResult | None:
        """The result if the job has ended, else None. Never blocks."""

    def stop(self, grace_period: float = 10.0) -> JobResult:
        """Ask the job to end (SIGTERM), kill it after ``grace_period`` s, wait, return."""


@runtime_checkable
class Launcher(Protocol):
    """Starts jobs. Chosen by name in the run config (``local``, ``docker``)."""

    name: str

    def launch(self, job: JobSpec) -> JobHandle:
        """Start ``job`` and return at once."""

    def reap_orphans(self, study_name: str, keep_trial_numbers: set[int]) -> list[str]:
        """Stop jobs of ``study_name`` left by dead workers; return what was stopped."""
