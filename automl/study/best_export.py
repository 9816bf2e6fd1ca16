"""The exported model of the best trial: ``dino export`` (or the TAO container's
``export``) run through the study's launcher, so containers export like they train.

The job writes into a folder of its own beside the file asked for (``<name>_export/``,
which a container's user may write), and the file is moved into place afterwards: the
study folder belongs to the orchestrator, not to the container's user.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from automl.launchers.base import JobResult, Launcher
from automl.study.tasks import run_task, task_command


def export_command(train_command: list[str] | tuple[str, ...]) -> list[str]:
    """``[..., "dino", "train"]`` -> ``[..., "dino", "export"]`` (ValueError when it cannot)."""
    return task_command(train_command, "export")


def export_best(
    launcher: Launcher,
    train_command: list[str],
    study_name: str,
    trial_number: int,
    spec: Path,
    checkpoint: Path,
    out_file: Path,
    read_only_paths: tuple[Path, ...],
    timeout_s: float,
    env: dict[str, str] | None = None,
    overrides: tuple[str, ...] = (),
    stop_event: threading.Event | None = None,
) -> tuple[JobResult, Path]:
    """Export ``checkpoint`` to ``out_file`` (stopped after ``timeout_s``, or when
    ``stop_event`` is set: a Ctrl-C during the export); returns the job's result and its
    log, ``out_file`` with the suffix ``.log``."""
    out_file = Path(out_file).resolve()
    job_dir = out_file.parent / f"{out_file.stem}_export"
    produced = job_dir / out_file.name
    if produced.exists():
        produced.unlink()  # a previous export's file: only this job's counts
    run = run_task(launcher, train_command, "export", study_name=study_name, trial_number=trial_number,
                   spec=Path(spec), out_dir=job_dir,
                   overrides=[f"export.checkpoint={checkpoint}", f"export.onnx_file={produced}", *overrides],
                   read_only_paths=(Path(checkpoint).resolve().parent, *read_only_paths), timeout_s=timeout_s,
                   env=env, stop_event=stop_event)
    log = out_file.with_suffix(".log")
    if run.log.exists():
        shutil.copyfile(run.log, log)
    if run.ok and produced.exists():
        os.replace(produced, out_file)
    return run.result, log
