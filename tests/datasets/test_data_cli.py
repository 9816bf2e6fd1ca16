"""``automl dataset check | stage | synth`` through the real ``automl`` entry point."""

import json
from pathlib import Path

import pytest
import yaml

from automl.cli import main

from reference_files import tao_file


@pytest.fixture(autouse=True)
def wide_console(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: one line per cell, easy to assert on
    monkeypatch.setenv("AUTOML_DATA_CACHE", str(tmp_path / "cache"))


def test_check_clean_dataset_exits_0_and_warns_about_missing_val(tmp_path, coco_split, capsys):
    train = coco_split(tmp_path / "train")
    rc = main(["dataset", "check", "--train", str(train), "--num-classes", "4", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"images {train.resolve() / 'images'}" in out
    assert "no validation source" in out and "0 error(s), 1 warning(s)." in out


def test_check_broken_dataset_and_spec_exits_1_with_fixes(tmp_path, coco_split, capsys):
    train = coco_split(tmp_path / "train", archive=True, keep_folder=False)
    val = coco_split(tmp_path / "val", n_images=2, seed=3)
    (val / "images" / "0001.png").unlink()
    spec = yaml.safe_load(tao_file("spec_template_train.yaml").read_text())
    spec["model"]["num_feature_levels"] = 3  # fewer levels than the 4 listed stages
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    rc = main(["dataset", "check", "--train", str(train), "--val", str(val), "--spec", str(spec_file), "--batch-size", "8"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "use: dataset.num_classes = 4" in out  # left at 91 in the template
    assert "use: model.num_feature_levels = 4" in out
    assert "use: dataset.batch_size = 6" in out  # --batch-size overrides the spec's 4
    assert "1 image files listed in the annotations are missing" in out and "'0001.png'" in out
    assert "3 error(s), 1 warning(s)." in out


def test_check_and_stage_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["dataset", "check", "--train", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["dataset", "stage", "gs://bucket/x"]) == 2
    assert "gs:// scheme is not supported" in capsys.readouterr().err
    assert main(["dataset", "check", "--train", str(tmp_path), "--spec", str(tmp_path / "missing.yaml")]) == 2
    assert "spec file" in capsys.readouterr().err


def test_stage_from_s3_prints_the_staged_paths(tmp_path, coco_split, s3, bucket, uploader, capsys, aws_env):
    split = coco_split(tmp_path / "train", archive=True)
    uploader(s3.client, bucket, "train", split)
    cache = tmp_path / "explicit-cache"
    rc = main(["dataset", "stage", f"s3://{bucket}/train", "--cache", str(cache), "--endpoint-url", aws_env, "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    image_dir, json_file = Path(lines["image_dir"]), Path(lines["json_file"])
    assert image_dir.is_relative_to(cache) and image_dir.name == "images"
    assert sorted(p.name for p in image_dir.iterdir()) == sorted(p.name for p in (split / "images").iterdir())
    assert json.loads(json_file.read_text()) == json.loads((split / "annotations.json").read_text())


@pytest.mark.slow  # importing dino.data pulls in torch (~20 s on a busy 2-core box)
def test_synth_then_check(tmp_path, capsys):
    pytest.importorskip("dino.data.synth")
    out_dir = tmp_path / "synth"
    rc = main(["dataset", "synth", "--out", str(out_dir), "--num-images", "6", "--num-classes", "2", "--size", "32", "--archive"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (out_dir / "train" / "images.tar.gz").is_file() and "num_classes to use: 3" in out
    rc = main(["dataset", "check", "--train", str(out_dir / "train" / "images.tar.gz"), "--val", str(out_dir / "val"), "--num-classes", "3", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Preflight: no problems found." in out
    assert main(["dataset", "synth", "--out", str(out_dir), "--num-images", "0"]) == 2
    assert "num_images must be >= 1" in capsys.readouterr().err
