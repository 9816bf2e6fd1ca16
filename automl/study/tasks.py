"""The trainer's other tasks (``export``, ``evaluate``, ``inference``) as jobs of the study's
launcher, so containers export, evaluate and infer exactly as they train.

Each task gets a results folder of its own that the job may write (a container's user
owns it, the launcher hands it over), while the trial's folder (its spec and
checkpoints) and the data are mounted read-only. A task never writes into the study
folder itself: the orchestrator moves what it produced there afterwards (a container
user could not create files in a folder only the orchestrator owns).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from automl.launchers.base import JobResult, JobSpec, Launcher

TASKS = ("export", "evaluate", "inference")


def task_command(train_command: list[str] | tuple[str, ...], task: str) -> list[str]:
    """``[..., "dino", "train"]`` -> ``[..., "dino", task]``."""
    if task not in TASKS:
        raise ValueError(f"unknown trainer task {task!r}; one of {TASKS}")
    if not train_command or train_command[-1] != "train":
        raise ValueError(f"cannot derive the {task} command from {list(train_command)!r} (it must end in 'train')")
    return [*train_command[:-1], task]


@dataclasses.dataclass(frozen=True)
class TaskRun:
    """A finished task job: its result, log and results folder (``<out_dir>/<task>/...``)."""

    task: str
    result: JobResult
    log: Path
    out_dir: Path

    @property
    def ok(self) -> bool:
        return self.result.exit_code == 0 and not self.result.oom_killed


def run_task(
    launcher: Launcher,
    train_command: list[str] | tuple[str, ...],
    task: str,
    *,
    study_name: str,
    trial_number: int,
    spec: Path,
    out_dir: Path,
    overrides: list[str],
    read_only_paths: tuple[Path, ...] = (),
    timeout_s: float = 1800.0,
    devices: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
    stop_event: threading.Event | None = None,
) -> TaskRun:
    """Run ``dino <task> -e spec results_dir=<out_dir> <overrides>`` to completion (stopped
    after ``timeout_s``, or once ``stop_event`` is set). ``spec``'s folder is mounted
    read-only beside ``read_only_paths``."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{task}.log"
    job = JobSpec(
        study_name=study_name,
        trial_number=trial_number,
        command=(*task_command(train_command, task), "-e", str(spec), f"results_dir={out_dir}", *overrides),
        results_dir=out_dir,
        log_path=log,
        devices=devices,
        env=dict(env or {}),
        read_only_paths=(Path(spec).resolve().parent, *read_only_paths),
        workdir=out_dir,
    )
    handle = launcher.launch(job)
    result = None
    if stop_event is None:
        try:
            result = handle.wait(timeout_s)
        except TimeoutError:
            pass
    else:  # short waits, so that a stop is seen within a second
        deadline = time.monotonic() + timeout_s
        while result is None and time.monotonic() < deadline and not stop_event.is_set():
            try:
                result = handle.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                continue
    if result is None:
        result = handle.stop(10.0)
    return TaskRun(task, result, log, out_dir)
