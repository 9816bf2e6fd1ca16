"""ArtifactRecorder against a real SQLite study and a real FileSystemArtifactStore."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from automl.ui.artifacts import ArtifactRecorder, guess_mimetype


def test_fixture_trials_carry_spec_and_log_tail(study_fixture):
    rec = ArtifactRecorder(study_fixture.artifact_dir)
    study = optuna.load_study(
        study_name=study_fixture.study_name, storage=study_fixture.storage_url
    )
    for trial in study.get_trials():
        metas = {m.filename: m for m in rec.artifacts_of(study, trial)}
        assert set(metas) == {"spec.yaml", "log_tail.log"}
        assert metas["spec.yaml"].mimetype == "text/plain"  # shown in the browser, not downloaded
        spec = rec.read_bytes(metas["spec.yaml"].artifact_id).decode()
        assert spec == Path(trial.user_attrs["spec_path"]).read_text()
        tail = rec.read_bytes(metas["log_tail.log"].artifact_id).decode()
        assert tail.rstrip("\n") == trial.user_attrs["log_tail"]
    spec_of_2 = rec.find(study, study.trials[2], "spec.yaml")
    assert spec_of_2 is not None and spec_of_2.artifact_id == study_fixture.spec_artifact_ids[2]


def test_upload_renames_and_works_from_another_process(tmp_path):
    """The objective's worker knows only the storage URL and the trial id."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    trial = study.ask()
    log = tmp_path / "stdout.txt"
    log.write_text("line 1\nValidation mAP50 : 0.25\n")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from automl.ui.artifacts import ArtifactRecorder
        rec = ArtifactRecorder(Path({str(tmp_path / 'artifacts')!r}))
        print(rec.upload({url!r}, {trial._trial_id}, Path({str(log)!r}), name="log_tail.log"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    artifact_id = out.stdout.strip().splitlines()[-1]
    rec = ArtifactRecorder(tmp_path / "artifacts")
    meta = rec.find(url, trial._trial_id, "log_tail.log")
    assert meta is not None and meta.artifact_id == artifact_id
    assert rec.read_bytes(artifact_id) == log.read_bytes()
    assert rec.find(url, trial._trial_id, "stdout.txt") is None  # stored under the new name


def test_upload_after_tell_says_to_upload_first(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    trial = study.ask()
    study.tell(trial, 1.0)
    spec = tmp_path / "spec.yaml"
    spec.write_text("a: 1\n")
    rec = ArtifactRecorder(tmp_path / "artifacts")
    with pytest.raises(ValueError, match=r"trial 0 .*COMPLETE.*before telling"):
        rec.upload(study, trial._trial_id, spec)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        rec.upload(study, study.ask()._trial_id, tmp_path / "nope.yaml")


def test_guess_mimetype():
    assert guess_mimetype("spec.yaml") == "text/plain"
    assert guess_mimetype("train.log") == "text/plain"
    assert guess_mimetype("curve.png") == "image/png"
    assert guess_mimetype("model.pth") == "application/octet-stream"
