"""Square brackets in data are printed as they are, never read as console markup.

Study names (``trucks[v2]``), file names (a folder path holding ``[/x]``, which rich
would read as a closing tag and crash on), trainer messages and our own hints
(``[x, y, width, height]``, ``[cpu]``) go through the real ``automl`` command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from automl.datasets import SpecFacts, StagedSplit, preflight
from automl.study.attrs import DEVICE, FAILURE

from orchestrator_utils import scripted_config, write_coco

ROOT = Path(__file__).resolve().parents[2]
STUDY = "trucks[v2]"


def _automl(*args: str) -> subprocess.CompletedProcess:
    """``python -m automl ...`` with a wide console, so no cell wraps; torch-free and quick."""
    env = {**os.environ, "COLUMNS": "1000", "SCRIPTED_EPOCH_SECONDS": "0.1"}
    env.pop("AUTOML_STORAGE", None)
    proc = subprocess.run([sys.executable, "-m", "automl", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr, proc.stderr
    return proc


def _bracketed_folder(tmp_path: Path) -> Path:
    """``<tmp>/trucks[v2]/a[/x]``: a path whose text holds both kinds of bracket trouble."""
    folder = tmp_path / STUDY / "a[" / "x]"
    folder.mkdir(parents=True)
    assert "[/x]" in str(folder)
    return folder


def test_dataset_check_prints_paths_and_findings_verbatim(tmp_path):
    root = _bracketed_folder(tmp_path)
    train, val = write_coco(root / "train"), write_coco(root / "val", 4)
    coco = json.loads((train / "annotations.json").read_text())
    coco["annotations"][0]["bbox"] = [4, 4, 12]  # not [x, y, width, height]
    coco["annotations"][1]["bbox"] = [4, 4, 0, 0]  # no area
    (train / "annotations.json").write_text(json.dumps(coco))

    proc = _automl("dataset", "check", "--train", str(train), "--val", str(val), "--num-classes", "3")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # errors found, reported as a table
    assert f"train: images {train.resolve() / 'images'}" in out
    assert f"annotations {val.resolve() / 'annotations.json'}" in out
    findings = preflight(StagedSplit(train / "images", train / "annotations.json"),
                         StagedSplit(val / "images", val / "annotations.json"), SpecFacts(num_classes=3))
    quoting = [f for f in findings if "[x, y, width, height]" in f.what + f.fix]
    assert quoting, f"the broken boxes should give a finding that quotes the COCO box layout: {findings}"
    for finding in findings:
        assert finding.what in out and finding.fix in out, (finding, out)


def test_status_and_best_show_a_bracketed_study_its_failure_and_params(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    good = study.ask()
    good.suggest_categorical("model.backbone", ["resnet[/x]"])
    good.set_user_attr(DEVICE, "[cpu]")
    study.tell(good, 0.5)
    failed = study.ask()
    failed.set_user_attr(FAILURE, "box [x, y, width, height] of [/x] bad")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)

    proc = _automl("status", "--storage", storage)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"study {STUDY}" in out  # the table's title
    for text in ("[cpu]", "backbone=resnet[/x]", "box [x, y, width, height] of [/x] bad", "complete: 1, fail: 1"):
        assert text in out, (text, out)

    proc = _automl("best", "--storage", storage, "--study", STUDY)
    assert proc.returncode == 0, proc.stderr
    assert f"study        {STUDY}" in proc.stdout and "'model.backbone': 'resnet[/x]'" in proc.stdout


def test_a_run_prints_its_config_path_study_name_slots_and_outputs_verbatim(tmp_path):
    folder = _bracketed_folder(tmp_path)
    coco_dirs = write_coco(folder / "data" / "train"), write_coco(folder / "data" / "val", 4)
    cfg = scripted_config(folder, coco_dirs, study={"name": STUDY}, budget={"n_trials": 2},
                          fixed={"train.num_epochs": 2, "dataset.batch_size": 2},
                          export={"enabled": False}, cpu={"budget": {"n_trials": 2}})
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))

    proc = _automl("run", "--config", str(config), "--devices", "cpu")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"automl no GPU in use: running the CPU-sized variant of {config} (its 'cpu:' block" in out
    assert f"automl study '{STUDY}': 2 trial(s) to run on 1 slot(s) [cpu]" in out
    assert f"study {STUDY}" in out.replace(f"'{STUDY}'", "")  # the summary table's title
    best_spec = folder / "ws" / STUDY / "best_spec.yaml"
    assert f"automl best spec: {best_spec}" in out and best_spec.is_file()


def test_a_transfer_bar_shows_the_object_name_verbatim(capsys, monkeypatch):
    from automl.datasets.progress import byte_progress

    monkeypatch.setenv("COLUMNS", "200")
    with byte_progress("s3://bucket/trucks[v2]/[/x]/images.tar.gz", 100, enabled=True) as advance:
        advance(100)
    assert "s3://bucket/trucks[v2]/[/x]/images.tar.gz" in capsys.readouterr().err
