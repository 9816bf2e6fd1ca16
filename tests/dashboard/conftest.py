"""A real study (SQLite in tmp_path) with completed, pruned, failed and running trials.

Built with plain optuna, as the objective would leave it: one intermediate value per epoch,
user attributes for device / job id / results dir / prune epoch / failure diagnosis, and
spec + log tail artifacts uploaded through :class:`automl.ui.artifacts.ArtifactRecorder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from automl.ui.artifacts import ArtifactRecorder
from automl.ui.dashboard import CHROMIUM, CHROMIUM_ARGS  # the same browser the screenshot command drives

STUDY_NAME = "dino-smoke-test"
# per-epoch val_mAP50 of the completed trials (trial number -> curve)
COMPLETE_CURVES = {
    0: [0.05, 0.21, 0.34, 0.41, 0.45],
    1: [0.02, 0.15, 0.29, 0.38, 0.52],
    3: [0.04, 0.18, 0.31, 0.36, 0.39],
}
PRUNED_CURVE = [0.01, 0.03, 0.04]  # trial 2, pruned after epoch 2 (0-based steps)
FAILED_CURVE = [0.03]  # trial 4, CUDA OOM after one epoch
RUNNING_CURVE = [0.06, 0.22]  # trial 5, still running


@dataclass
class StudyFixture:
    storage_url: str
    study_name: str
    workspace: Path
    artifact_dir: Path
    spec_artifact_ids: dict[int, str]  # trial number -> spec.yaml artifact id


def _spec_text(lr: float, batch: int) -> str:
    return f"train:\n  num_epochs: 5\n  optim:\n    lr: {lr}\ndataset:\n  batch_size: {batch}\n"


def build_study(workspace: Path) -> StudyFixture:
    """Write the study into ``workspace/study.db`` and its artifacts into workspace/artifacts."""
    workspace.mkdir(parents=True, exist_ok=True)
    storage_url = f"sqlite:///{workspace / 'study.db'}"
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage_url, direction="maximize"
    )
    with warnings.catch_warnings():  # experimental API, stable since 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_mAP50"])
    rec = ArtifactRecorder(workspace / "artifacts")
    dists = {
        "train.optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "dataset.batch_size": optuna.distributions.IntDistribution(2, 8),
        "model.num_queries": optuna.distributions.CategoricalDistribution([100, 300, 900]),
    }
    spec_ids: dict[int, str] = {}
    plan = {
        0: ("complete", COMPLETE_CURVES[0]),
        1: ("complete", COMPLETE_CURVES[1]),
        2: ("pruned", PRUNED_CURVE),
        3: ("complete", COMPLETE_CURVES[3]),
        4: ("failed", FAILED_CURVE),
        5: ("running", RUNNING_CURVE),
    }
    lrs = [3e-4, 1e-4, 5e-3, 2e-4, 8e-4, 1e-3]
    batches = [4, 4, 8, 2, 8, 4]
    queries = [300, 900, 100, 300, 900, 100]
    for number, (kind, curve) in plan.items():
        # fixed params (as a warm start would enqueue them) so spec and params agree
        study.enqueue_trial(
            {
                "train.optim.lr": lrs[number],
                "dataset.batch_size": batches[number],
                "model.num_queries": queries[number],
            }
        )
        trial = study.ask(dists)
        assert trial.number == number
        results_dir = workspace / "trials" / f"trial_{number:03d}"
        (results_dir / "train").mkdir(parents=True, exist_ok=True)
        spec_path = results_dir / "spec.yaml"
        spec_path.write_text(_spec_text(lrs[number], batches[number]))
        trial.set_user_attr("device", f"cuda:{number % 2}")
        trial.set_user_attr("job_id", f"pid-{4000 + number}")
        trial.set_user_attr("results_dir", str(results_dir))
        trial.set_user_attr("spec_path", str(spec_path))
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
        spec_ids[number] = rec.upload(study, trial._trial_id, spec_path)
        tail = "\n".join(f"epoch {e}: Validation mAP50 : {v}" for e, v in enumerate(curve))
        if kind == "failed":
            tail += "\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
            trial.set_user_attr("failure", "CUDA out of memory at epoch 1")
            trial.set_user_attr("failure_fix", "reduce dataset.batch_size (now 8)")
        if kind == "pruned":
            trial.set_user_attr("prune_epoch", len(curve) - 1)
        trial.set_user_attr("log_tail", tail)
        rec.upload_text(study, trial._trial_id, tail + "\n", "log_tail.log")
        if kind == "complete":
            study.tell(trial, max(curve))
        elif kind == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif kind == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return StudyFixture(storage_url, STUDY_NAME, workspace, workspace / "artifacts", spec_ids)


@pytest.fixture(scope="session")
def _study_template(tmp_path_factory: pytest.TempPathFactory) -> StudyFixture:
    # building costs ~100 SQLite commits (seconds on a busy 2-core box): do it once
    return build_study(tmp_path_factory.mktemp("template") / "ws")


@pytest.fixture
def study_fixture(tmp_path: Path, _study_template: StudyFixture) -> StudyFixture:
    """A private copy of the template workspace; tests may change it freely."""
    src, ws = _study_template.workspace, tmp_path / "ws"
    shutil.copytree(src, ws)
    # the trials' results_dir / spec_path attributes are absolute: point them at the copy
    with contextlib.closing(sqlite3.connect(ws / "study.db")) as db, db:
        db.execute(
            "UPDATE trial_user_attributes SET value_json = REPLACE(value_json, ?, ?)",
            (json.dumps(str(src))[1:-1], json.dumps(str(ws))[1:-1]),
        )
    return dataclasses.replace(
        _study_template,
        storage_url=f"sqlite:///{ws / 'study.db'}",
        workspace=ws,
        artifact_dir=ws / "artifacts",
    )


@pytest.fixture
def chromium_launch() -> dict:
    """Keyword arguments for ``playwright.chromium.launch`` with Debian's chromium."""
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    return {"executable_path": str(CHROMIUM), "args": list(CHROMIUM_ARGS)}


@pytest.fixture
def dashboard(study_fixture: StudyFixture):
    """optuna-dashboard on the fixture study, on a free loopback port; stopped afterwards."""
    from automl.ui.dashboard import DashboardServer

    server = DashboardServer(
        study_fixture.storage_url, host="127.0.0.1", port=0, artifact_dir=study_fixture.artifact_dir
    ).start()
    try:
        yield server
    finally:
        server.stop()
