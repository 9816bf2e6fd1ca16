"""One worker exports the best model, and only when the study's last trial is over.

Every worker finalises the study when it stops, and used to export the best checkpoint
too: two workers wrote ``best_model.onnx`` at once, and the first one to stop exported a
best trial that a trial still running elsewhere might beat. Under the study's storage
lock a worker claims the export of trial N (a study attribute naming trial, worker and
state) only when no trial of another worker is still running and nobody exported trial N
already; the others say who does it. A claim of a worker that died (on this host, by pid
and start time) or that is older than the export timeout is taken over.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from automl.launchers.records import WorkerId, current_worker
from automl.study import attrs
from automl.study.storage_lock import StorageLock


@dataclasses.dataclass(frozen=True)
class ExportDecision:
    export: bool
    reason: str = ""  # why not, for the person running this worker


def _claim_is_live(record: dict[str, Any], timeout_s: float) -> bool:
    """A claim still being worked on by a live worker."""
    if record.get("state") != "exporting":
        return False
    if time.time() - float(record.get("at", 0)) > timeout_s + 60:
        return False
    worker = WorkerId.parse(str(record.get("worker", "")))
    if worker is not None and worker.on_this_host:
        return worker.is_alive()
    return True  # another host's worker: trusted until the timeout


def claim_export(study: optuna.Study, lock: StorageLock, best_number: int, out_file: Path,
                 timeout_s: float) -> ExportDecision:
    """Whether this worker exports trial ``best_number`` to ``out_file`` now; a True
    decision is recorded on the study before the lock is released."""
    me = str(current_worker())
    with lock.hold():
        others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                  if t.user_attrs.get(attrs.WORKER) != me]
        if others:
            numbers = ", ".join(str(t.number) for t in others)
            return ExportDecision(False, f"trial(s) {numbers} still running in another worker; the last worker to "
                                         "finish exports the best model")
        record = study.user_attrs.get(attrs.STUDY_EXPORT)
        if isinstance(record, dict) and record.get("trial") == best_number:
            if record.get("state") == "done" and Path(str(record.get("path", ""))).exists():
                return ExportDecision(False, f"trial {best_number}'s model was exported already: {record['path']}")
            if _claim_is_live(record, timeout_s) and record.get("worker") != me:
                return ExportDecision(False, f"worker {record.get('worker')} is exporting trial {best_number}")
        study.set_user_attr(attrs.STUDY_EXPORT, {"trial": best_number, "worker": me, "state": "exporting",
                                                 "at": time.time(), "path": str(out_file)})
    return ExportDecision(True)


def finish_export(study: optuna.Study, best_number: int, out_file: Path | None) -> None:
    """Record the export's outcome (``None``: it failed, another worker may retry)."""
    state = "done" if out_file is not None else "failed"
    study.set_user_attr(attrs.STUDY_EXPORT, {"trial": best_number, "worker": str(current_worker()), "state": state,
                                             "at": time.time(), "path": str(out_file) if out_file else None})
