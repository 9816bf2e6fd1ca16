"""Where a trial's files live, and how a retried trial finds its predecessor's.

``<workspace>/<study>/trial_<NNNN>/`` holds ``spec.yaml``, ``stdout.log`` and the
trainer's ``train/`` folder (status.json, checkpoints). A retried trial (stale
heartbeat or interrupted) inherits the user attribute ``results_dir`` and so resumes
from the checkpoints already there.
"""

from __future__ import annotations

import re
from pathlib import Path

from optuna.trial import FrozenTrial, Trial

from automl.study import attrs

_CKPT = re.compile(r"model_epoch_(\d+)_step_(\d+)\.pth$")


def trial_results_dir(study_dir: Path, trial: Trial | FrozenTrial) -> Path:
    inherited = trial.user_attrs.get(attrs.RESULTS_DIR)
    if inherited:
        return Path(inherited)
    return (study_dir / f"trial_{trial.number:04d}").resolve()


def latest_checkpoint(results_dir: Path) -> Path | None:
    """The newest ``model_epoch_*`` checkpoint, or the ``dino_model_latest.pth`` alias."""
    train = Path(results_dir) / "train"
    best: tuple[int, int, Path] | None = None
    for path in train.glob("model_epoch_*_step_*.pth"):
        m = _CKPT.search(path.name)
        if m:
            key = (int(m.group(1)), int(m.group(2)), path)
            best = key if best is None or key[:2] > best[:2] else best
    if best is not None:
        return best[2]
    alias = train / "dino_model_latest.pth"
    return alias if alias.exists() else None
