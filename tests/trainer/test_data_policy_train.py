"""The data policy in the trainer, on the quirky-dataset generator (tests/quirky_data.py):
what the dataset hands the model, then a real ``dino train`` of the tiny model whose
every training and validation target is recorded (``DINO_RECORD_TARGETS``) and compared
with the boxes a person sees in the images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from quirky_data import (
    COLORS,
    IDENTITY_AUGMENTATION,
    NUM_CLASSES,
    QuirkySplit,
    truth_after_transforms,
    write_quirky_split,
)

from automl.observe.diagnosis import diagnose
from dino.config import DatasetConfig, DataSource
from dino.config.spec import AugmentationConfig
from dino.data import DataError, build_dataset
from dino.data.loader import RECORD_TARGETS_ENV

from dino_test_utils import TINY_MODEL, read_status, run_dino, write_spec

FIXES = {"image_exif_rotated": 2, "image_rescaled": 1, "box_degenerate": 1, "box_past_border": 1}


def dataset_config(**over) -> DatasetConfig:
    cfg = DatasetConfig(num_classes=NUM_CLASSES, batch_size=4, workers=0, **over)
    cfg.augmentation = AugmentationConfig(**IDENTITY_AUGMENTATION)
    return cfg


def source(split: QuirkySplit) -> DataSource:
    return DataSource(image_dir=str(split.image_dir), json_file=str(split.json_file))


def assert_targets_are_the_truth(split: QuirkySplit, image_id: int, size: list[int], labels: list[int],
                                 boxes: list[list[float]]) -> None:
    name = next(n for n, i in split.ids.items() if i == image_id)
    truth = truth_after_transforms(split.truth[name], (size[0], size[1]))
    assert labels == [c for c, _ in truth], name
    for got, (_, want) in zip(boxes, truth, strict=True):
        assert got == pytest.approx(want, abs=1e-5), (name, got, want)


@pytest.mark.parametrize("train", [True, False])
def test_the_dataset_hands_the_model_the_boxes_a_person_sees(tmp_path, train):
    split = write_quirky_split(tmp_path / "q")
    ds = build_dataset([source(split)], dataset_config(), train, "dataset.train_data_sources")
    (where, report), = ds.policy
    assert where == "dataset.train_data_sources[0]" and report.counts() == FIXES
    normalize = ds.transforms.transforms[-1]
    mean, std = torch.tensor(normalize.mean), torch.tensor(normalize.std)
    for index, image_id in enumerate(ds.ids):
        image, target = ds[index]
        name = next(n for n, i in split.ids.items() if i == image_id)
        assert_targets_are_the_truth(split, image_id, target["size"].tolist(), target["labels"].tolist(),
                                     target["boxes"].tolist())
        # the pixels the model gets are the displayed image: each box's centre has its object's colour
        h, w = image.shape[1:]
        rgb = (image * std[:, None, None] + mean[:, None, None]) * 255
        for (cat, _), (cx, cy, _bw, _bh) in zip(split.truth[name], target["boxes"].tolist()):
            pixel = rgb[:, int(cy * h), int(cx * w)].tolist()
            assert all(abs(a - b) < 40 for a, b in zip(pixel, COLORS[cat])), (name, pixel)
    # the evaluation ground truth holds the corrected boxes too (COCO xywh, displayed pixels)
    gt = {a["image_id"]: [] for a in ds.coco.dataset["annotations"]}
    for a in ds.coco.dataset["annotations"]:
        gt[a["image_id"]].append(a["bbox"])
    x0, y0, x1, y1 = split.truth["half.png"][0][1]
    assert gt[split.ids["half.png"]] == [pytest.approx([x0, y0, x1 - x0, y1 - y0])]
    assert len(gt[split.ids["zero.png"]]) == 1  # the zero-area box is gone
    assert ds.coco.imgs[split.ids["exif6.jpg"]]["width"] == 64 and ds.coco.imgs[split.ids["exif6.jpg"]]["height"] == 80


def test_the_dataset_refuses_an_inconsistent_ratio_and_strict_refuses_every_fix(tmp_path):
    odd = write_quirky_split(tmp_path / "odd", inconsistent=True)
    with pytest.raises(DataError) as err:
        build_dataset([source(odd)], dataset_config(), True, "dataset.train_data_sources")
    text = str(err.value)
    assert "dataset.train_data_sources[0]" in text and str(odd.json_file) in text
    assert f"'odd.png' (image id {odd.ids['odd.png']}) is 64x48, annotations say 128x128" in text
    assert "Fix: write each image's real width/height" in text
    split = write_quirky_split(tmp_path / "q")
    with pytest.raises(DataError) as err:
        build_dataset([source(split)], dataset_config(strict_data_policy=True), True, "dataset.train_data_sources")
    assert "refuses 4 kinds of problem" in str(err.value) and "strict data policy" in str(err.value)


def quirky_spec(train: QuirkySplit, val: QuirkySplit, results: Path, **dataset) -> dict:
    return {
        "results_dir": str(results),
        "model": dict(TINY_MODEL),
        "dataset": {
            "train_data_sources": [{"image_dir": str(train.image_dir), "json_file": str(train.json_file)}],
            "val_data_sources": [{"image_dir": str(val.image_dir), "json_file": str(val.json_file)}],
            "num_classes": NUM_CLASSES, "batch_size": 4, "workers": 0,
            "augmentation": dict(IDENTITY_AUGMENTATION), **dataset,
        },
        "train": {"num_epochs": 1, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}},
    }


@pytest.mark.slow  # a real training run on the CPU (~30 s on a busy 2-core box)
def test_dino_train_on_the_quirky_set_trains_on_the_corrected_targets(tmp_path):
    train = write_quirky_split(tmp_path / "train", n_plain=7)  # 12 images: 3 full batches of 4
    val = write_quirky_split(tmp_path / "val", n_plain=3, seed=1)
    spec = write_spec(tmp_path / "spec.yaml", quirky_spec(train, val, tmp_path / "results"))
    record = tmp_path / "targets.jsonl"
    proc = run_dino("train", "-e", str(spec), env_extra={RECORD_TARGETS_ENV: str(record)})
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the policy's counted warnings, once per dataset: on stdout and as a status line
    for where, split in (("dataset.train_data_sources[0]", train), ("dataset.val_data_sources[0]", val)):
        head = f"Data policy, {where} ({split.json_file}): "
        assert proc.stdout.count(head) == len(FIXES), proc.stdout
        zero_id = split.annotation_ids["zero.png"][1]  # annotation ids are 1000 + their index
        zero = f"annotations[{zero_id - 1000}] (id {zero_id}, image id {split.ids['zero.png']})"
        assert f"{head}1 box has zero or negative width or height: dropped ({zero}: bbox [50.0, 50.0, 0.0, 0.0])" \
            in proc.stdout
    lines = [s for s in read_status(tmp_path / "results") if "data_policy" in s]
    assert [(s["data_policy"]["dataset"], s["verbosity"]) for s in lines] == [
        ("dataset.train_data_sources[0]", "WARNING"), ("dataset.val_data_sources[0]", "WARNING")]
    assert all(s["data_policy"]["counts"] == FIXES for s in lines)
    assert lines[0]["data_policy"]["boxes_kept"] == lines[0]["data_policy"]["boxes"] - 1  # the zero-area box

    # every target the model trained and validated on is the truth
    records = [json.loads(line) for line in record.read_text().splitlines()]
    for split_name, split in (("train", train), ("val", val)):
        seen = [r for r in records if r["split"] == split_name]
        assert sorted(r["image_id"] for r in seen) == sorted(split.ids.values())  # each image once in 1 epoch
        for r in seen:
            assert_targets_are_the_truth(split, r["image_id"], r["size"], r["labels"], r["boxes"])


@pytest.mark.slow  # two trainer start-ups (the refusals come before the model is built)
def test_dino_train_refuses_what_it_cannot_train_before_the_model_is_built(tmp_path):
    train = write_quirky_split(tmp_path / "train", inconsistent=True)
    val = write_quirky_split(tmp_path / "val", n_plain=3, seed=1)
    spec = write_spec(tmp_path / "spec.yaml", quirky_spec(train, val, tmp_path / "results"))
    proc = run_dino("train", "-e", str(spec))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"'odd.png' (image id {train.ids['odd.png']}) is 64x48, annotations say 128x128" in proc.stderr
    assert "Fix: write each image's real width/height" in proc.stderr and "Traceback" not in proc.stderr
    failure = read_status(tmp_path / "results")[-1]
    assert failure["status"] == "FAILURE" and "odd.png" in failure["message"]
    assert not list((tmp_path / "results").rglob("*.pth"))
    # the orchestrator names it from the real output (were the data to change after preflight)
    found = diagnose(proc.returncode, proc.stdout + proc.stderr, read_status(tmp_path / "results"))
    assert found.code == "data_refused" and "automl dataset check" in found.fix
    assert "dataset.train_data_sources[0]" in found.evidence

    strict = write_spec(tmp_path / "strict.yaml", quirky_spec(write_quirky_split(tmp_path / "ok"), val,
                                                              tmp_path / "strict_results"))
    proc = run_dino("train", "-e", str(strict), "dataset.strict_data_policy=true")
    assert proc.returncode == 2 and "strict data policy" in proc.stderr, proc.stderr[-3000:]
    assert os.path.isdir(tmp_path / "strict_results") and not list((tmp_path / "strict_results").rglob("*.pth"))
