"""Checkpoints: ``model_epoch_<EEE>_step_<S>.pth`` and the ``dino_model_latest.pth`` alias.

A checkpoint is a plain ``torch.save`` dict: ``model`` (state dict), ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (0-based index of the last finished epoch),
``step`` (optimizer steps so far), ``rng`` (python / numpy / torch / cuda states),
``kpi``, ``num_classes`` and ``model_config``. Files are written to a temporary name and
moved into place with ``os.replace``, so a kill never leaves a torn checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch

from dino.config import Spec, SpecError

LATEST = "dino_model_latest.pth"
_NAME = re.compile(r"^model_epoch_(\d+)_step_(\d+)\.pth$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"model_epoch_{epoch:03d}_step_{step}.pth"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(state: dict[str, Any], train_dir: str, keep_named: bool) -> str:
    """Write ``dino_model_latest.pth`` and, if ``keep_named``, the epoch file; return the latter
    (or the alias). The alias is a hard link to the epoch file where the filesystem allows."""
    os.makedirs(train_dir, exist_ok=True)
    latest = os.path.join(train_dir, LATEST)
    if not keep_named:
        atomic_save(state, latest)
        return latest
    named = os.path.join(train_dir, checkpoint_name(state["epoch"], state["step"]))
    atomic_save(state, named)
    tmp = f"{latest}.tmp{os.getpid()}"
    try:
        os.link(named, tmp)
    except OSError:
        shutil.copyfile(named, tmp)
    os.replace(tmp, latest)
    return named


def latest_checkpoint(train_dir: str) -> str | None:
    """``dino_model_latest.pth`` if present, else the newest epoch file, else None."""
    latest = os.path.join(train_dir, LATEST)
    if os.path.isfile(latest):
        return latest
    found = []
    if os.path.isdir(train_dir):
        for name in os.listdir(train_dir):
            m = _NAME.match(name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), name))
    return os.path.join(train_dir, max(found)[2]) if found else None


def load_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint dict; ``ValueError`` with the path if it is not one of ours."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a checkpoint (a dict with a 'model' state dict)")
    return ckpt


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model state dict of one of our checkpoints, a Lightning one or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    else:
        state = ckpt
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Load tensors whose name and shape match; return (loaded count, skipped names)."""
    own = model.state_dict()
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(ok, strict=False)
    skipped = sorted(set(state) - set(ok)) + sorted(set(own) - set(state))
    return len(ok), skipped


def task_dir_of(spec: Spec, task: str, override: str = "") -> str:
    """``<results_dir>/<task>`` (TAO's layout) unless the task's own results_dir is set."""
    if override:
        return override
    if not spec.results_dir:
        raise SpecError("results_dir is empty: pass results_dir=/path/to/results")
    return os.path.join(spec.results_dir, task)


def train_dir_of(spec: Spec) -> str:
    return task_dir_of(spec, "train", spec.train.results_dir)


def checkpoint_for(spec: Spec, task: str, given: str) -> str:
    """The checkpoint ``<task>.checkpoint`` names, or the latest one of the train dir."""
    if given and given != "???":
        if not os.path.isfile(given):
            raise SpecError(f"{task}.checkpoint not found: {given}")
        return given
    found = latest_checkpoint(train_dir_of(spec))
    if not found:
        doing = "run inference with" if task == "inference" else task
        raise SpecError(f"no checkpoint to {doing}: set {task}.checkpoint=/path/model.pth "
                        f"(none found in {train_dir_of(spec)})")
    return found


def load_trained(spec: Spec, path: str, task: str):
    """``(model, criterion, postprocessor)`` of the spec's model with the weights of the
    checkpoint at ``path``, in eval mode on the CPU. A checkpoint that is not one, or does
    not fit the spec's model, is a SpecError (bad input) saying what to change."""
    from dino.models import build_dino

    try:
        model, criterion, post = build_dino(spec.model, spec.dataset.num_classes)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        ckpt = load_checkpoint(path)
    except ValueError as exc:
        raise SpecError(f"{task}.checkpoint: {exc}") from None
    try:
        model.load_state_dict(model_state(ckpt))
    except RuntimeError as exc:
        hint = ""
        if ckpt.get("num_classes") not in (None, spec.dataset.num_classes):
            hint = f"; it was trained with dataset.num_classes={ckpt['num_classes']}"
        raise SpecError(f"checkpoint {path} does not fit this spec's model{hint}; use the spec it was trained "
                        f"with ({str(exc).splitlines()[0]})") from None
    return model.eval(), criterion.eval(), post
