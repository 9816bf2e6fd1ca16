"""write_report on a real study: HTML content and the PNG figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from automl.errors import UserError
from automl.ui.report import redact_url, resolve_study_name, write_report


def _assert_real_png(path: Path, min_bytes: int = 8_000) -> None:
    """A drawn figure, not an empty canvas: big enough and with many distinct colours."""
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # lines, text, markers


def test_report_of_mixed_study(study_fixture, tmp_path):
    out = tmp_path / "report"
    path = write_report(
        study_fixture.storage_url, study_fixture.study_name, out, study_fixture.artifact_dir
    )
    assert path == out / "report.html"
    page = path.read_text()
    for png in ("history.png", "epoch_curves.png"):
        _assert_real_png(out / png)
        assert f'src="{png}"' in page
    # 3 complete + 1 pruned: too few for importances that mean something (test_report_story.py has enough)
    assert not (out / "importances.png").exists()
    assert "Left out: only 4 finished trial(s) with a reported val_mAP50; they need at least 5." in page
    assert "dino-smoke-test" in page
    assert "6 trials (1 running, 3 complete, 1 pruned, 1 fail)" in page
    assert "maximize <b>val_mAP50</b>" in page
    # best trials table: trial 1 (0.52) first, with its device, job and best epoch
    best_table = page.split("<h2>Best trials</h2>")[1].split("</table>")[0]
    rows = best_table.split("<tr>")[2:]
    assert [r.split("#")[1].split("<")[0] for r in rows] == ["1", "0", "3"]
    assert "0.52" in rows[0] and "cuda:1" in rows[0] and "pid-4001" in rows[0]
    assert "4 (0.52)" in rows[0]
    # how each trial ended
    assert "pruned at epoch 2" in page
    assert "CUDA out of memory at epoch 1" in page
    assert "<b>fix:</b> reduce dataset.batch_size (now 8)" in page
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in page
    assert '<span class="state RUNNING">' in page and '<span class="state FAIL">' in page
    # best spec: the file trial 1 ran with (lr 1e-4)
    spec = page.split("<h2>Best spec</h2>")[1]
    assert "trial 1 user attribute &#x27;spec_path&#x27;" in spec
    assert "lr: 0.0001" in spec


def test_best_spec_falls_back_to_the_artifact(study_fixture, tmp_path):
    """Retention deleted the trial folders: the spec.yaml artifact still has it."""
    shutil.rmtree(study_fixture.workspace / "trials")
    page = write_report(
        study_fixture.storage_url, study_fixture.study_name, tmp_path, study_fixture.artifact_dir
    ).read_text()
    spec = page.split("<h2>Best spec</h2>")[1]
    assert "artifact spec.yaml" in spec and "lr: 0.0001" in spec
    page = write_report(study_fixture.storage_url, study_fixture.study_name, tmp_path).read_text()
    assert "Spec not found; tried: spec_path=" in page and "(file gone)" in page


def test_report_with_one_completed_trial_skips_importances(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, direction="minimize")
    study.enqueue_trial({"x": 1.0})
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    t.report(3.0, 0)
    t.report(2.0, 1)
    study.tell(t, 2.0)
    failed = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    study.tell(failed, state=optuna.trial.TrialState.FAIL)  # no diagnosis recorded
    (tmp_path / "importances.png").write_bytes(b"stale figure of an earlier report")
    page = write_report(url, "tiny", tmp_path).read_text()
    assert "minimize <b>objective</b>" in page
    assert "Left out: only 1 finished trial(s) with a reported objective; they need at least 5." in page
    assert not (tmp_path / "importances.png").exists()
    assert "failed (no diagnosis recorded)" in page
    assert "No epoch reported by trials #1." in page
    assert "no spec recorded" in page
    _assert_real_png(tmp_path / "history.png", min_bytes=5_000)
    _assert_real_png(tmp_path / "epoch_curves.png", min_bytes=5_000)


def test_report_of_empty_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="empty", storage=url)
    page = write_report(url, "empty", tmp_path / "r").read_text()
    assert "0 trials (none yet)" in page and "No completed trial yet." in page
    assert not list((tmp_path / "r").glob("*.png"))


def test_resolve_study_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(UserError, match="no study in .*automl run"):
        resolve_study_name(url, None)
    optuna.create_study(study_name="b", storage=url)
    assert resolve_study_name(url, None) == "b"
    optuna.create_study(study_name="a", storage=url)
    with pytest.raises(UserError, match=r"2 studies in .*: a, b; choose one with --study"):
        resolve_study_name(url, None)
    assert resolve_study_name(url, "a") == "a"
    with pytest.raises(UserError, match=r"no study named 'c' .*studies there: a, b"):
        resolve_study_name(url, "c")


def test_redact_url():
    assert redact_url("postgresql://optuna:s3cret@db:5432/optuna") == (
        "postgresql://optuna:***@db:5432/optuna"
    )
    assert redact_url("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"
