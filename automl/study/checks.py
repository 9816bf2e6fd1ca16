"""What is checked before any data are staged and before trial 0: whatever a config can
get wrong that would otherwise surface inside a trial (after staging, as a FAIL trial
that eats budget) or never (a CPU run reported as ``cuda:0``).

The config file's own keys are validated when it is read (:mod:`automl.config`); these
checks need the host: its GPUs, its file system. The storage is checked by opening the
study (:func:`automl.study.runner.open_study`), before staging too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from automl.config.run_config import RunConfig
from automl.config.storage import prepare_workspace
from automl.errors import ConfigError
from automl.observe.extractors import check_metric_name, get_extractor
from automl.study.slots import detect_gpus


def check_workspace(workspace: Path, study_dir: Path) -> None:
    """The workspace and the study's folder exist (created here) and take files: the one
    rule of :func:`automl.config.storage.prepare_workspace`, for both."""
    prepare_workspace(workspace)
    prepare_workspace(study_dir, "the study folder in the workspace")


def check_devices(devices: str | Sequence[int], visible: list[int] | None = None) -> None:
    """Explicit GPU indices must be GPUs this host has: without the check ``--devices 0``
    on a machine with no GPU hands trials ``CUDA_VISIBLE_DEVICES=0``, which the trainer
    cannot use, so they train on the CPU while the study says ``cuda:0``."""
    if devices in ("auto", "cpu"):
        return
    requested = [int(d) for d in devices]
    if not requested:
        raise ConfigError("devices: the list is empty; use auto, cpu or GPU indices such as [0, 1]")
    duplicates = sorted({d for d in requested if requested.count(d) > 1})
    if duplicates:
        raise ConfigError(f"devices: {duplicates} listed more than once; each GPU can be given once")
    gpus = detect_gpus() if visible is None else visible
    missing = [d for d in requested if d not in gpus]
    if not gpus:
        raise ConfigError(f"devices: {requested} asks for GPUs, but this host has none that nvidia-smi can see; "
                          "use devices: cpu (--devices cpu) or auto, or run on a host with GPUs")
    if missing:
        raise ConfigError(f"devices: GPU(s) {missing} do not exist here; this host has GPUs {gpus}. "
                          "List some of those, or use auto")


def check_extractor(cfg: RunConfig) -> None:
    """Build the metric extractor once (a bad name, option or pattern is an error now),
    and check that it can produce the metric when it knows its names in advance."""
    extractor = get_extractor(cfg.metric.extractor, cfg.metric.extractor_options)
    check_metric_name(extractor, cfg.metric.name, cfg.metric.extractor)


def check_trainer_command(cfg: RunConfig) -> None:
    """A local trial runs ``trainer.command`` on this host: it must exist here (a
    container's command lives in its image and is not checked)."""
    if cfg.launcher.name != "local" or not cfg.trainer.command:
        return
    program = cfg.trainer.command[0]
    found = shutil.which(program) if os.sep not in program else (program if os.access(program, os.X_OK) else None)
    if found is None:
        raise ConfigError(f"trainer.command: {program!r} is not an executable on this host (PATH or path); install "
                          "the trainer (`pip install -e .` gives `dino`) or give its full path")


def check_run(cfg: RunConfig) -> None:
    """Every host-side check, in the order a user would fix them."""
    check_workspace(cfg.workspace, cfg.study_dir)
    check_devices(cfg.devices.use)
    check_extractor(cfg)
    check_trainer_command(cfg)
