"""Checkpoints: ``model_epoch_<EEE>_step_<S>.pth``, the ``dino_model_latest.pth`` alias and
``model_best.pth``, the checkpoint of the best validation epoch so far.

A checkpoint is a plain ``torch.save`` dict: ``model`` (state dict), ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (0-based index of the last finished epoch),
``step`` (optimizer steps so far), ``rng`` (python / numpy / torch / cuda states),
``kpi``, ``num_classes``, ``model_config`` and ``best`` (the best epoch so far, see
:class:`BestCheckpoint`). Files are written to a temporary name and
moved into place with ``os.replace``, so a kill never leaves a torn checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch

from dino.config import Spec, SpecError
from dino.config.spec import BEST_METRICS

LATEST = "dino_model_latest.pth"
BEST = "model_best.pth"
BEST_RECORD = "model_best.json"  # which epoch model_best.pth holds, readable without torch
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
    _link_or_copy(named, latest)
    return named


def _link_or_copy(src: str, dst: str) -> None:
    """``dst`` becomes ``src``'s content atomically (a hard link where the filesystem allows)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@dataclasses.dataclass(frozen=True)
class BestRecord:
    """The epoch ``model_best.pth`` holds: ``metric`` had ``value`` there, its best so far."""

    metric: str
    value: float
    epoch: int
    step: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BestCheckpoint:
    """Keeps ``model_best.pth`` beside the epoch files: the checkpoint of the epoch whose
    validation ``metric`` is the best so far (``train.best_checkpoint_metric``).

    ``train.checkpoint_interval`` keeps every N-th epoch only, so without it the best
    epoch's weights would be gone when a later epoch scores worse; a study that reports
    a trial's best epoch must be able to hand back that epoch's checkpoint. Only a strict
    improvement moves it (the earliest of equal values stays). ``model_best.json`` says
    which epoch it holds, for readers without torch (the orchestrator).
    """

    def __init__(self, train_dir: str, metric: str, resumed: dict[str, Any] | None = None) -> None:
        self.train_dir = train_dir
        self.metric = metric
        self.best: BestRecord | None = None
        if resumed and resumed.get("metric") == metric:
            self.best = BestRecord(metric, float(resumed["value"]), int(resumed["epoch"]), int(resumed["step"]))
        self._pending: BestRecord | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.metric)

    def offer(self, kpi: dict[str, Any], epoch: int, step: int, validated: bool) -> bool:
        """Record this epoch if its validation beat the best so far (call before saving
        its checkpoint, so the state saved carries the new best); True when it did."""
        self._pending = None
        if not self.enabled or not validated:
            return False
        try:
            value = float(kpi[self.metric])
        except (KeyError, TypeError, ValueError):
            return False
        if math.isnan(value):
            return False
        if self.best is not None:
            better = value > self.best.value if BEST_METRICS[self.metric] == "max" else value < self.best.value
            if not better:
                return False
        self.best = self._pending = BestRecord(self.metric, value, epoch, step)
        return True

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint stores, so a resumed run knows the best so far."""
        return self.best.as_dict() if self.best else None

    def keep(self, checkpoint: str) -> str | None:
        """After the epoch's checkpoint is written: make it ``model_best.pth`` if
        :meth:`offer` said so. Returns the path of the best checkpoint when it moved."""
        if self._pending is None:
            return None
        record, self._pending = self._pending, None
        return self._write(checkpoint, record)

    def repair(self, resumed_from: str, ckpt_epoch: int) -> None:
        """A run killed between an epoch's checkpoint and its ``model_best.pth`` resumes
        from a checkpoint whose recorded best is that very epoch: finish the job."""
        if self.best is None or self.best.epoch != ckpt_epoch:
            return
        if self.recorded_epoch() != ckpt_epoch:
            self._write(resumed_from, self.best)

    def recorded_epoch(self) -> int | None:
        try:
            with open(os.path.join(self.train_dir, BEST_RECORD), encoding="utf-8") as f:
                return int(json.load(f)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, checkpoint: str, record: BestRecord) -> str:
        path = os.path.join(self.train_dir, BEST)
        _link_or_copy(checkpoint, path)
        tmp = os.path.join(self.train_dir, f"{BEST_RECORD}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**record.as_dict(), "checkpoint": BEST}, f)
        os.replace(tmp, os.path.join(self.train_dir, BEST_RECORD))
        return path


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
