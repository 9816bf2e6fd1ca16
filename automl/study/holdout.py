"""Score a checkpoint on the fixed held-out set: ``dino evaluate`` (or the TAO container's
``evaluate``) run through the study's launcher, so containers evaluate like they train.

The night's best and the champion are scored by the same job on the same staged set,
so their numbers compare. The evaluation spec is the model's own spec with the held-out
set as ``dataset.test_data_sources`` (TAO's evaluate split) and the checkpoint named;
the score is the kpi the job writes to its ``status.json`` (``test_mAP50``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from automl.datasets.staging import StagedSplit
from automl.launchers.base import JobResult, JobSpec, Launcher
from dino.config.yaml_values import load_yaml


def evaluate_command(train_command: list[str]) -> list[str]:
    """``[..., "dino", "train"]`` -> ``[..., "dino", "evaluate"]``."""
    if not train_command or train_command[-1] != "train":
        raise ValueError(f"cannot derive the evaluate command from {train_command!r} (it must end in 'train')")
    return [*train_command[:-1], "evaluate"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One checkpoint's score; ``value`` is None when the job failed (``error`` says why)."""

    checkpoint: str
    metric: str
    value: float | None
    log: str
    out_dir: str
    exit_code: int | None = None
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.value is not None


def evaluation_spec(spec_path: Path, checkpoint: Path, holdout: StagedSplit, out_dir: Path) -> dict[str, Any]:
    """The model's spec, pointed at ``checkpoint`` and the held-out set, writing to ``out_dir``;
    one device (the job's first visible one)."""
    spec = load_yaml(Path(spec_path).read_text()) or {}
    spec["results_dir"] = str(out_dir)
    dataset = spec.setdefault("dataset", {})
    dataset["test_data_sources"] = {"image_dir": str(holdout.image_dir), "json_file": str(holdout.json_file)}
    evaluate = spec.setdefault("evaluate", {})
    evaluate.update({"checkpoint": str(checkpoint), "results_dir": str(out_dir), "gpu_ids": [0], "num_gpus": 1})
    return spec


def read_kpi(out_dir: Path, metric: str) -> float | None:
    """The last value of ``metric`` in the job's ``status.json`` (TAO writes kpis as strings)."""
    value: float | None = None
    for path in (out_dir / "status.json", out_dir / "evaluate" / "status.json"):
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                kpi = json.loads(line).get("kpi") or {}
            except (ValueError, AttributeError):
                continue
            if metric in kpi:
                try:
                    value = float(kpi[metric])
                except (TypeError, ValueError):
                    continue
    return value


def evaluate_checkpoint(
    launcher: Launcher,
    train_command: list[str],
    *,
    study_name: str,
    trial_number: int,
    spec: Path,
    checkpoint: Path,
    holdout: StagedSplit,
    out_dir: Path,
    metric: str,
    timeout_s: float,
    devices: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    grace_period: float = 10.0,
) -> Evaluation:
    """Run the evaluation job to its end (stopped after ``timeout_s`` or when ``stop`` is set)
    on the first of ``devices`` (none: the CPU)."""
    started = time.monotonic()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "evaluate.log"
    (out_dir / "status.json").unlink(missing_ok=True)  # a rerun must not read an older score
    eval_spec = out_dir / "spec.yaml"
    eval_spec.write_text(yaml.safe_dump(
        evaluation_spec(spec, checkpoint, holdout, out_dir), sort_keys=False))

    def done(result: JobResult | None, error: str | None = None) -> Evaluation:
        value = read_kpi(out_dir, metric) if result is not None and result.exit_code == 0 else None
        if error is None and value is None:
            error = (f"exit code {result.exit_code}" if result is not None and result.exit_code != 0
                     else f"the job wrote no {metric!r} kpi to {out_dir / 'status.json'}")
        return Evaluation(str(checkpoint), metric, value, str(log), str(out_dir),
                          None if result is None else result.exit_code, error, time.monotonic() - started)

    try:
        command = (*evaluate_command(train_command), "-e", str(eval_spec), f"results_dir={out_dir}")
    except ValueError as exc:
        return done(None, str(exc))
    if not Path(checkpoint).is_file():
        return done(None, f"checkpoint {checkpoint} does not exist")
    job = JobSpec(
        study_name=study_name, trial_number=trial_number, command=command, results_dir=out_dir, log_path=log,
        devices=tuple(devices[:1]), env=dict(env or {}),
        read_only_paths=tuple(sorted({Path(checkpoint).resolve(), Path(holdout.image_dir).resolve(),
                                      Path(holdout.json_file).resolve()})),
        workdir=out_dir,
    )
    handle = launcher.launch(job)
    deadline = started + timeout_s
    result: JobResult | None = None
    try:
        while result is None:
            if stop is not None and stop.is_set():
                handle.stop(grace_period)
                return done(None, "stopped: the night was interrupted")
            if time.monotonic() >= deadline:
                handle.stop(grace_period)
                return done(None, f"stopped after {timeout_s:.0f} s (the night's time ran out)")
            try:
                result = handle.wait(min(1.0, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                continue
    finally:
        if result is None and handle.result is None:
            handle.stop(grace_period)
    return done(result)
