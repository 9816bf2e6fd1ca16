"""The end-of-study export, the report's pictures and ``automl best``'s hand-off through the
Docker launcher (the image CI builds): containers of a non-root user write only their own
task folders, and the files land where the orchestrator puts them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from automl.cli import main
from automl.study.runner import run_study
from automl.ui.progress import ProgressBoard

from tiny_study import tiny_study_config

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_study_export_and_handoff_in_containers(launcher, study, tmp_path, capsys):
    image = launcher.image
    os.chmod(tmp_path, 0o755)  # the container user reads the data and results under it
    cfg, data = tiny_study_config(tmp_path, study, {"name": "docker", "grace_period": 5, "poll_interval": 0.2,
                                                    "options": {"image": image, "shm_size": "256m"}})
    for folder in (Path(data.root),):
        for root, dirs, files in os.walk(folder):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.chmod(name, 0o755 if os.path.isdir(name) else 0o644)
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))
    assert outcome.best_trial == 0, outcome
    assert outcome.exported_model is not None and outcome.exported_model.exists()  # no PermissionError
    export_log = (cfg.study_dir / "best_model.log").read_text()
    assert "ONNX file :" in export_log and "Permission denied" not in export_log
    study_dir_owner = cfg.study_dir.stat().st_uid
    assert study_dir_owner == os.getuid()  # the study folder stays the orchestrator's
    # the report's pictures: dino inference in a container of the image, drawn by the orchestrator
    pictures = outcome.showcase
    assert pictures is not None and pictures.ok, pictures
    assert len(pictures.pictures) == 4 and all(p.path.is_file() for p in pictures.pictures)
    assert f"in {image} as" in pictures.log.read_text()
    assert 'src="predictions/val_' in (cfg.study_dir / "report" / "report.html").read_text()

    out = tmp_path / "handoff"
    code = main(["best", "--workspace", str(cfg.workspace), "--study", study,
                 "--evaluate", str(Path(data.val.image_dir).parent), "--export", str(out),
                 "--infer", data.val.image_dir, "--conf-threshold", "0"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    for name in ("model.onnx", "metrics.json", "per_class_ap.json", "predictions.json", "README.md"):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 24
    logs = "".join(p.read_text() for p in (out / "jobs").rglob("*.log"))
    assert f"in {image} as" in logs  # the launcher's own line: the tasks ran in containers of the image
    assert "Permission denied" not in logs
