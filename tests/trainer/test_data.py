"""COCO dataset edge cases, transforms and batching, checked on hand-made files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dino.config import DatasetConfig, DataSource
from dino.data import CocoDetection, DataError, build_dataset, check_batch, collate
from dino.data import transforms as T
from dino.data.coco import load_image


def make_coco(tmp_path, images: list[tuple[str, Image.Image]], annotations: list[dict], categories: list[int]):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    entries = []
    for i, (name, img) in enumerate(images, start=1):
        img.save(img_dir / name)
        entries.append({"id": i * 10, "file_name": name, "width": img.width, "height": img.height})
    data = {"images": entries, "annotations": [{"id": k + 1, **a} for k, a in enumerate(annotations)],
            "categories": [{"id": c, "name": f"c{c}"} for c in categories]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return DataSource(image_dir=str(img_dir), json_file=str(path))


def test_modes_crowd_empty_and_arbitrary_ids(tmp_path):
    gray = Image.fromarray(np.full((40, 60), 128, np.uint8), "L")
    rgba = Image.fromarray(np.zeros((50, 30, 4), np.uint8), "RGBA")
    deep = Image.fromarray(np.full((20, 20), 40000, np.uint16))  # 16-bit grayscale
    src = make_coco(tmp_path, [("g.png", gray), ("a.png", rgba), ("d.png", deep)], [
        {"image_id": 10, "category_id": 42, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"image_id": 10, "category_id": 7, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1},  # crowd
        {"image_id": 10, "category_id": 7, "bbox": [50, 30, 30, 30]},  # clipped to the image, no area/iscrowd keys
        {"image_id": 10, "category_id": 7, "bbox": [5, 5, 0, 4]},  # degenerate
    ], categories=[7, 42])
    ds = CocoDetection([src], None, "dataset.train_data_sources")
    assert len(ds) == 3 and ds.max_category_id()[0] == 42
    img, tgt = ds[0]
    assert img.mode == "RGB" and img.size == (60, 40)
    assert tgt["labels"].tolist() == [42, 7]  # crowd and degenerate boxes dropped
    assert tgt["boxes"].tolist() == [[10, 5, 30, 15], [50, 30, 60, 40]]  # xyxy, clipped
    assert tgt["orig_size"].tolist() == [40, 60] and int(tgt["image_id"]) == 10
    img, tgt = ds[1]  # RGBA without boxes is kept
    assert img.mode == "RGB" and tgt["boxes"].shape == (0, 4) and tgt["labels"].shape == (0,)
    img, _ = ds[2]
    assert img.mode == "RGB" and np.asarray(img).max() == 255  # 16-bit scaled, not saturated garbage
    # the evaluation ground truth still holds the crowd box (COCOeval ignores matches to it)
    assert sum(a["iscrowd"] for a in ds.coco.dataset["annotations"]) == 1
    # the most boxes a training target has (the decoder graphs' denoising slots follow it):
    # the crowd and the degenerate box do not count
    assert ds.max_boxes() == max(len(ds[i][1]["labels"]) for i in range(len(ds))) == 2


def test_transformed_boxes_are_normalized_cxcywh(tmp_path):
    img = Image.fromarray(np.zeros((100, 200, 3), np.uint8))
    src = make_coco(tmp_path, [("x.png", img)], [{"image_id": 10, "category_id": 1, "bbox": [20, 10, 40, 30]}], [1])
    cfg = DatasetConfig(num_classes=2)
    cfg.augmentation.test_random_resize = 50
    ds = build_dataset([src], cfg, train=False, where="dataset.val_data_sources")
    image, tgt = ds[0]
    assert image.shape == (3, 50, 100)
    assert tgt["boxes"][0].tolist() == pytest.approx([0.2, 0.25, 0.2, 0.3])
    assert tgt["size"].tolist() == [50, 100] and tgt["orig_size"].tolist() == [100, 200]


def test_training_augmentation_keeps_boxes_on_their_objects(tmp_path):
    """Paint a white box; after random flip/resize/crop the target box must still cover white pixels."""
    arr = np.zeros((120, 160, 3), np.uint8)
    arr[30:70, 40:100] = 255
    src = make_coco(tmp_path, [("w.png", Image.fromarray(arr))],
                    [{"image_id": 10, "category_id": 1, "bbox": [40, 30, 60, 40]}], [1])
    cfg = DatasetConfig(num_classes=2)
    aug = cfg.augmentation
    aug.scales, aug.train_random_resize, aug.random_resize_max_size = [96, 112], [100, 120], 200
    aug.train_random_crop_min, aug.train_random_crop_max, aug.horizontal_flip_prob = 60, 100, 0.5
    ds = build_dataset([src], cfg, train=True, where="dataset.train_data_sources")
    random.seed(0)
    for _ in range(30):
        image, tgt = ds[0]
        h, w = image.shape[1:]
        assert max(h, w) <= 200
        for cx, cy, bw, bh in tgt["boxes"].tolist():
            x0, x1 = int((cx - bw / 4) * w), int((cx + bw / 4) * w)
            y0, y1 = int((cy - bh / 4) * h), int((cy + bh / 4) * h)
            inner = image[:, y0:y1 + 1, x0:x1 + 1]
            assert inner.mean() > 1.5  # normalized white is ~2.2, black ~-1.9


def test_collate_pads_and_masks():
    a, b = torch.ones(3, 4, 6), torch.ones(3, 5, 3)
    images, masks, targets = collate([(a, {"i": 0}), (b, {"i": 1})])
    assert images.shape == (2, 3, 5, 6) and masks.shape == (2, 5, 6)
    assert not masks[0, :4, :6].any() and masks[0, 4:].all()
    assert not masks[1, :5, :3].any() and masks[1, :, 3:].all()
    assert images[1, :, :, 3:].abs().sum() == 0 and [t["i"] for t in targets] == [0, 1]


def test_collate_rounds_up_to_a_multiple_and_masks_the_extra_padding():
    a, b = torch.ones(3, 40, 70), torch.ones(3, 65, 30)
    images, masks, _ = collate([(a, {}), (b, {})], multiple=32)
    assert images.shape == (2, 3, 96, 96) and masks.shape == (2, 96, 96)
    assert not masks[0, :40, :70].any() and masks[0].sum() == 96 * 96 - 40 * 70
    assert not masks[1, :65, :30].any() and masks[1].sum() == 96 * 96 - 65 * 30
    assert images.sum() == a.sum() + b.sum()
    assert collate([(torch.ones(3, 64, 96), {})], multiple=32)[0].shape[-2:] == (64, 96)  # already a multiple


def test_batches_are_rounded_up_on_gpus_only():
    """The rule the trainer, dino evaluate and dino inference share (dino.data.loader)."""
    from dino.data import pad_multiple
    from dino.data.loader import GPU_PAD_MULTIPLE

    assert pad_multiple(torch.device("cpu")) == 1
    assert pad_multiple(torch.device("cuda", 0)) == GPU_PAD_MULTIPLE == 32


def test_resized_hw_caps_the_longer_side():
    assert T.resized_hw(200, 100, 50, None) == (50, 100)
    assert T.resized_hw(1000, 100, 100, 500) == (50, 500)


def test_num_classes_below_max_id_names_the_id_and_the_fix(tmp_path):
    src = make_coco(tmp_path, [("x.png", Image.new("RGB", (8, 8)))],
                    [{"image_id": 10, "category_id": 12, "bbox": [1, 1, 3, 3]}], [3, 12])
    with pytest.raises(DataError) as err:
        build_dataset([src], DatasetConfig(num_classes=12), True, "dataset.train_data_sources")
    assert "category id 12" in str(err.value) and "dataset.num_classes=13" in str(err.value)


def test_bad_sources_fail_clearly(tmp_path):
    cfg = DatasetConfig(num_classes=5)
    with pytest.raises(DataError, match="json_file is empty"):
        build_dataset([DataSource(image_dir=str(tmp_path), json_file="")], cfg, True, "dataset.val_data_sources")
    with pytest.raises(DataError, match=r"dataset.val_data_sources\[0\].json_file not found"):
        build_dataset([DataSource(str(tmp_path), str(tmp_path / "no.json"))], cfg, True, "dataset.val_data_sources")
    with pytest.raises(DataError, match="image_dir not found"):
        build_dataset([DataSource(str(tmp_path / "none"), "x.json")], cfg, True, "dataset.val_data_sources")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        build_dataset([DataSource(str(tmp_path), str(tmp_path / "bad.json"))], cfg, True, "x")
    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="dataset is empty"):
        build_dataset([DataSource(str(tmp_path), str(tmp_path / "empty.json"))], cfg, True, "x")
    src = make_coco(tmp_path, [("a.png", Image.new("RGB", (8, 8))), ("b.png", Image.new("RGB", (8, 8)))], [], [1])
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match="1 of 2 image files .* missing: .*b.png"):
        build_dataset([src], cfg, True, "x")
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*b.png"):  # its header is read when the set is built
        build_dataset([src], cfg, True, "x")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / "b.png")
    whole = (tmp_path / "images" / "b.png").read_bytes()
    (tmp_path / "images" / "b.png").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut off
    ds = build_dataset([src], cfg, True, "x")
    with pytest.raises(DataError, match="cannot read image .*b.png"):
        ds[1]
    with pytest.raises(DataError, match="has 2 images, fewer than one batch"):
        check_batch(ds, 2, 2, "dataset.train_data_sources")


def test_several_sources_are_merged_with_unique_ids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    s1 = make_coco(a, [("x.png", Image.new("RGB", (8, 8)))], [{"image_id": 10, "category_id": 1, "bbox": [1, 1, 2, 2]}], [1])
    s2 = make_coco(b, [("x.png", Image.new("RGB", (8, 8)))], [{"image_id": 10, "category_id": 2, "bbox": [1, 1, 4, 4]}], [2])
    ds = CocoDetection([s1, s2], None, "dataset.train_data_sources")
    assert len(ds) == 2 and len(set(ds.ids)) == 2
    assert ds.max_boxes() == 1  # one box in each image, though both files call their image 10
    assert [ds[i][1]["labels"].tolist() for i in range(2)] == [[1], [2]]
    assert sorted(c["id"] for c in ds.coco.dataset["categories"]) == [1, 2]


def test_load_image_converts_palette(tmp_path):
    img = Image.new("P", (4, 4))
    img.save(tmp_path / "p.png")
    assert load_image(str(tmp_path / "p.png")).mode == "RGB"
