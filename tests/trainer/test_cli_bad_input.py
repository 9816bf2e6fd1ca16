"""Bad input: a clear message, a non-zero exit and a FAILURE status line, before any step."""

from __future__ import annotations

import json
import shutil

import pytest

from dino.cli import main

from dino_test_utils import read_status, run_dino, tiny_spec, write_spec


def run_bad(tmp_path, capsys, spec: dict | None, *overrides: str) -> tuple[int, str, list[dict]]:
    path = tmp_path / "spec.yaml"
    if spec is not None:
        write_spec(path, spec)
    code = main(["train", "-e", str(path), *overrides])
    err = capsys.readouterr().err
    results = tmp_path / "results"
    lines = read_status(results) if (results / "train" / "status.json").exists() else []
    return code, err, lines


def assert_failed_before_training(code, err, lines, message):
    assert code == 2, err
    assert message in err
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "FAILURE"
    assert message in lines[-1]["message"]
    assert not any("epoch" in line for line in lines)


@pytest.fixture
def spec(shapes_small, tmp_path):
    return tiny_spec(shapes_small, tmp_path / "results")


def test_typo_in_spec_file(tmp_path, capsys, spec):
    spec["train"]["optim"]["lr_bakcbone"] = 1e-4
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert_failed_before_training(code, err, lines, "did you mean 'train.optim.lr_backbone'")


def test_typo_in_override(tmp_path, capsys, spec):
    code, err, lines = run_bad(tmp_path, capsys, spec, "train.num_epoch=3")
    assert_failed_before_training(code, err, lines, "did you mean 'train.num_epochs'")


def test_missing_spec_file_still_reports_to_results_dir(tmp_path, capsys):
    code, err, lines = run_bad(tmp_path, capsys, None, f"results_dir={tmp_path / 'results'}")
    assert_failed_before_training(code, err, lines, "spec file not found")


def test_missing_annotation_file(tmp_path, capsys, spec):
    spec["dataset"]["val_data_sources"][0]["json_file"] = str(tmp_path / "nope.json")
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert_failed_before_training(code, err, lines, "dataset.val_data_sources[0].json_file not found")


def test_unreadable_annotation_file(tmp_path, capsys, spec):
    (tmp_path / "dir.json").mkdir()
    spec["dataset"]["train_data_sources"][0]["json_file"] = str(tmp_path / "dir.json")
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert_failed_before_training(code, err, lines, "json_file cannot be read")


def test_missing_image_files(tmp_path, capsys, spec, shapes_small):
    images = tmp_path / "images"
    shutil.copytree(shapes_small.val.image_dir, images)
    (images / "000002.jpg").unlink()
    spec["dataset"]["val_data_sources"][0]["image_dir"] = str(images)
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert_failed_before_training(code, err, lines, "image files listed in the annotations are missing")
    assert "000002.jpg" in err


def test_num_classes_below_max_category_id(tmp_path, capsys, spec):
    code, err, lines = run_bad(tmp_path, capsys, spec, "dataset.num_classes=2")
    assert_failed_before_training(code, err, lines, "category id 2")
    assert "set dataset.num_classes=3" in err


def test_empty_dataset(tmp_path, capsys, spec, shapes_small):
    empty = tmp_path / "empty.json"
    data = json.load(open(shapes_small.train.json_file))
    empty.write_text(json.dumps({**data, "images": [], "annotations": []}))
    spec["dataset"]["train_data_sources"][0]["json_file"] = str(empty)
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert_failed_before_training(code, err, lines, "the dataset is empty")


def test_dataset_smaller_than_one_batch(tmp_path, capsys, spec):
    code, err, lines = run_bad(tmp_path, capsys, spec, "dataset.batch_size=64")
    assert_failed_before_training(code, err, lines, "has 24 images, fewer than one batch")


def test_missing_pretrained_weights(tmp_path, capsys, spec):
    code, err, lines = run_bad(tmp_path, capsys, spec, f"train.pretrained_model_path={tmp_path / 'w.pth'}")
    assert_failed_before_training(code, err, lines, "train.pretrained_model_path not found")


def test_invalid_model_config_is_a_spec_error(tmp_path, capsys, spec):
    code, err, lines = run_bad(tmp_path, capsys, spec, "model.backbone=resnet_9000")
    assert_failed_before_training(code, err, lines, "model.backbone")


def test_no_results_dir(tmp_path, capsys, spec):
    del spec["results_dir"]
    code, err, lines = run_bad(tmp_path, capsys, spec)
    assert code == 2 and "results_dir is empty" in err and lines == []


def test_real_process_exit_code_and_status(tmp_path, spec):
    path = write_spec(tmp_path / "spec.yaml", spec)
    proc = run_dino("train", "-e", str(path), "dataset.num_classes=1", "model.num_select=10", timeout=120)
    assert proc.returncode == 2
    assert "error: dataset.num_classes is 1 but dataset.train_data_sources has category id 2" in proc.stderr
    assert read_status(tmp_path / "results")[-1]["status"] == "FAILURE"


def test_evaluate_without_a_checkpoint(tmp_path, capsys, spec):
    path = write_spec(tmp_path / "spec.yaml", spec)
    assert main(["evaluate", "-e", str(path)]) == 2
    assert "no checkpoint to evaluate" in capsys.readouterr().err
    lines = read_status(tmp_path / "results", "evaluate")
    assert lines[-1]["status"] == "FAILURE" and "evaluate.checkpoint" in lines[-1]["message"]
