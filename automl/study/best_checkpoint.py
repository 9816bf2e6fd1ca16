"""Which checkpoint stands for a trial: the one of the epoch its value comes from.

With ``metric.aggregate: best`` a trial's value is its best epoch's, and
``train.checkpoint_interval`` may have kept no file of that epoch; the trainer keeps
``model_best.pth`` for it (``train.best_checkpoint_metric``, which every trial's spec
sets to the study's metric when the trainer's schema has it) and says which epoch it
holds in ``model_best.json``. ``best.json``, the export and ``automl best`` all take
their checkpoint from :func:`checkpoint_for_value`, and say so when no checkpoint of
that epoch exists (a trainer without ``model_best.pth``) instead of handing back
another epoch's weights as if they were the best.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from automl.search_space import TrainSchema
from automl.study import attrs
from automl.study.trial_paths import latest_checkpoint

BEST_FIELD = "train.best_checkpoint_metric"
BEST_FILE = "model_best.pth"
BEST_RECORD = "model_best.json"
_EPOCH_FILE = re.compile(r"model_epoch_(\d+)_step_(\d+)\.pth$")


def best_checkpoint_assignments(metric: str, direction: str, schema: TrainSchema) -> dict[str, Any]:
    """The spec value that makes the trainer keep the checkpoint of the epoch the study
    will call best: the study's metric, when the schema lists it among the field's
    choices and the study ranks it the way the trainer does (a loss lower, the rest
    higher). A schema without the field (NVIDIA's TAO container) gets nothing."""
    field = schema.resolve(BEST_FIELD) if BEST_FIELD in schema else None
    if field is None or not field.enum or metric not in field.enum:
        return {}
    natural = "minimize" if metric.lower().endswith("loss") else "maximize"
    return {BEST_FIELD: metric} if direction == natural else {}


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint handed back for a trial, and whether it is of the epoch that gave
    the trial its value."""

    path: Path | None
    epoch: int | None  # the epoch it holds (None: not known, e.g. the latest alias)
    value_epoch: int | None  # the epoch the trial's value comes from

    @property
    def exact(self) -> bool:
        return self.path is not None and self.epoch is not None and self.epoch == self.value_epoch

    def note(self) -> str | None:
        """Why this is not the value's checkpoint, for the person reading the results."""
        if self.exact or self.value_epoch is None:
            return None
        if self.path is None:
            return f"no checkpoint kept for epoch {self.value_epoch} (the trial's value) or any other"
        held = "an unknown epoch" if self.epoch is None else f"epoch {self.epoch}"
        return (f"no checkpoint kept for epoch {self.value_epoch} (the trial's value); {self.path.name} holds {held}. "
                f"A trainer that keeps {BEST_FILE} for the study's metric ({BEST_FIELD}) or "
                "train.checkpoint_interval 1 keeps it")

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.path) if self.path else None, "checkpoint_epoch": self.epoch,
                "value_epoch": self.value_epoch, "checkpoint_is_value_epoch": self.exact}


def value_epoch(trial: FrozenTrial, aggregate: str) -> int | None:
    """The epoch whose reported value is the trial's value: the last one, or the
    earliest epoch reaching the trial's value (the trainer's best also stays on the
    earliest of equal values)."""
    curve = trial.intermediate_values
    if not curve:
        return None
    if aggregate == "last" or trial.value is None:
        return max(curve)
    matching = [epoch for epoch in sorted(curve) if curve[epoch] == trial.value]
    return matching[0] if matching else None


def _best_record(train_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((train_dir / BEST_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_for_value(trial: FrozenTrial, aggregate: str, metric: str) -> CheckpointChoice:
    """The checkpoint of the epoch ``trial``'s value comes from, else the newest one."""
    wanted = value_epoch(trial, aggregate)
    results_dir = trial.user_attrs.get(attrs.RESULTS_DIR)
    if not results_dir:
        return CheckpointChoice(None, None, wanted)
    train = Path(results_dir) / "train"
    if wanted is not None:
        for path in sorted(train.glob("model_epoch_*_step_*.pth")):
            match = _EPOCH_FILE.search(path.name)
            if match and int(match.group(1)) == wanted:
                return CheckpointChoice(path, wanted, wanted)
        record = _best_record(train)
        best = train / BEST_FILE
        if record and record.get("epoch") == wanted and record.get("metric") in (metric, None) and best.exists():
            return CheckpointChoice(best, wanted, wanted)
    fallback = latest_checkpoint(Path(results_dir))
    if fallback is None:
        return CheckpointChoice(None, None, wanted)
    match = _EPOCH_FILE.search(fallback.name)
    return CheckpointChoice(fallback, int(match.group(1)) if match else None, wanted)
