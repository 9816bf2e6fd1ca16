"""Checkpoint retention across nights: disks fill up one night at a time.

Within a night, :func:`automl.study.results.apply_retention` keeps only the best trials'
checkpoints. Across nights, the trial checkpoints of nights older than the newest
``keep_nights`` are deleted (the champion has its own copy in the champion folder), and
champion versions beyond ``keep`` are removed (:func:`automl.study.champion.prune_versions`).
Specs, logs, status files and the studies themselves stay: the history remains readable.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import optuna

from automl.study import attrs
from automl.study.warm_start import night_of


def old_night_studies(storage: str | optuna.storages.BaseStorage, base: str, tonight: dt.date,
                      keep_nights: int) -> list[str]:
    """Night studies of ``base`` up to tonight, minus the newest ``keep_nights`` (tonight counts)."""
    dated = sorted(((d, n) for n in optuna.get_all_study_names(storage)
                    if (d := night_of(n, base)) is not None and d <= tonight), reverse=True)
    return [name for _, name in dated[keep_nights:]]


def remove_old_checkpoints(storage: str | optuna.storages.BaseStorage, base: str, tonight: dt.date,
                           keep_nights: int | None) -> list[Path]:
    """Delete the ``.pth`` files of the trials of nights outside the newest ``keep_nights``."""
    if keep_nights is None:
        return []
    removed: list[Path] = []
    for name in old_night_studies(storage, base, tonight, keep_nights):
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            results_dir = t.user_attrs.get(attrs.RESULTS_DIR)
            if not results_dir:
                continue
            for ckpt in Path(results_dir).glob("train/*.pth"):
                ckpt.unlink(missing_ok=True)
                removed.append(ckpt)
    return removed
