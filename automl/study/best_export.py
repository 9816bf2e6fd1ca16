"""The exported model of the best trial: ``dino export`` (or the TAO container's
``export``) run through the study's launcher, so containers export like they train."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from automl.launchers.base import JobResult, JobSpec, Launcher


def export_command(train_command: list[str]) -> list[str]:
    """``[..., "dino", "train"]`` -> ``[..., "dino", "export"]``."""
    if not train_command or train_command[-1] != "train":
        raise ValueError(f"cannot derive the export command from {train_command!r} (it must end in 'train')")
    return [*train_command[:-1], "export"]


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
    stop_event: threading.Event | None = None,
) -> tuple[JobResult, Path]:
    """Run the export job to completion (stopped after ``timeout_s``, or when
    ``stop_event`` is set: a Ctrl-C during the export); returns its result and log file."""
    results_dir = Path(spec).parent
    log = out_file.with_suffix(".log")
    job = JobSpec(
        study_name=study_name,
        trial_number=trial_number,
        command=(*export_command(train_command), "-e", str(spec), f"results_dir={results_dir}",
                 f"export.checkpoint={checkpoint}", f"export.onnx_file={out_file}"),
        results_dir=results_dir,
        log_path=log,
        env=dict(env or {}),
        read_only_paths=read_only_paths,
        workdir=results_dir,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    handle = launcher.launch(job)
    if stop_event is None:
        try:
            return handle.wait(timeout_s), log
        except TimeoutError:
            return handle.stop(10.0), log
    deadline = time.monotonic() + timeout_s
    while not stop_event.is_set() and time.monotonic() < deadline:
        try:
            return handle.wait(min(1.0, max(0.0, deadline - time.monotonic()))), log
        except TimeoutError:
            continue
    return handle.stop(10.0), log
