"""The shapes generator: deterministic, valid COCO, TAO archive layout, safe re-runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import pytest

from dino.data.synth import MAX_CLASSES, class_names, generate_dataset, render_image


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_dataset(str(tmp_path / "a"), 10, 3, 48, seed=5, val_fraction=0.2, archive=True)
    b = generate_dataset(str(tmp_path / "b"), 10, 3, 48, seed=5, val_fraction=0.2, archive=True)
    c = generate_dataset(str(tmp_path / "c"), 10, 3, 48, seed=6, val_fraction=0.2, archive=True)
    assert digest(a.train.json_file) == digest(b.train.json_file) != digest(c.train.json_file)
    assert digest(a.train.archive) == digest(b.train.archive)
    assert (a.train.num_images, a.val.num_images) == (8, 2)


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path, monkeypatch):
    """Many images are rendered in worker processes: the files and annotations must be
    the very ones a single process writes (each image depends only on seed and index)."""
    import concurrent.futures

    import dino.data.synth as synth

    pools = []

    class Recorded(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, workers, **kwargs):
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(synth.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recorded)
    parallel = generate_dataset(str(tmp_path / "par"), 80, 3, 48, seed=2, val_fraction=0.0)
    assert pools == [2]  # 80 images: two workers
    monkeypatch.setattr(synth, "MAX_WORKERS", 1)
    single = generate_dataset(str(tmp_path / "one"), 80, 3, 48, seed=2, val_fraction=0.0)
    assert pools == [2]  # the single-process run started none
    assert digest(parallel.train.json_file) == digest(single.train.json_file)
    names = sorted(p.name for p in (tmp_path / "par" / "train" / "images").iterdir())
    assert len(names) == 80
    for name in names:
        assert digest(tmp_path / "par" / "train" / "images" / name) == digest(tmp_path / "one" / "train" / "images" / name)


def test_coco_content(tmp_path):
    paths = generate_dataset(str(tmp_path / "d"), 30, 12, 64, seed=1, val_fraction=0.0)
    assert paths.val is None
    data = json.load(open(paths.train.json_file))
    assert [c["id"] for c in data["categories"]] == list(range(1, 13))
    assert data["categories"][10]["name"] == "circle_outline"
    assert len(data["images"]) == 30 and len(data["annotations"]) > 30
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 64.01 and w >= 4 and h >= 4
        assert 1 <= ann["category_id"] <= 12 and ann["iscrowd"] == 0
    assert len({a["category_id"] for a in data["annotations"]}) >= 8  # many classes drawn


def test_objects_are_drawn_inside_their_boxes():
    img, objs = render_image(3, 0, 96, 1, (2, 2), (0.3, 0.4))  # filled circles
    import numpy as np

    arr = np.asarray(img, dtype=np.float32)
    for _cat, (x, y, w, h) in objs:
        cx, cy = int(x + w / 2), int(y + h / 2)
        centre = arr[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
        ring = np.concatenate([arr[int(y) - 2, int(x):int(x + w)], arr[min(95, int(y + h) + 1), int(x):int(x + w)]])
        assert np.abs(centre - ring.mean(0)).sum() > 40  # the shape differs from what surrounds its box


def test_class_colours_give_each_class_its_hue_and_leave_the_boxes_alone():
    import numpy as np

    from dino.data.synth import CLASS_COLOURS

    for index in range(6):
        plain_img, plain = render_image(4, index, 96, 3, (2, 2), (0.3, 0.4))
        img, objs = render_image(4, index, 96, 3, (2, 2), (0.3, 0.4), class_colours=True)
        assert objs == plain  # same draws: only the colour differs
        arr = np.asarray(img, dtype=np.float32)
        for cat, (x, y, w, h) in objs:
            if cat != 1:  # filled circles only: their centre pixel is the fill colour
                continue
            cx, cy = int(x + w / 2), int(y + h / 2)
            centre = arr[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
            assert np.abs(centre - np.array(CLASS_COLOURS[0])).max() <= 21  # the jitter, rounded


def test_archive_holds_top_folder_images(tmp_path):
    paths = generate_dataset(str(tmp_path / "d"), 4, 2, 32, seed=0, val_fraction=0.25, archive=True)
    with tarfile.open(paths.val.archive) as tar:
        names = tar.getnames()
    assert names[0] == "images" and names[1:] == ["images/000001.jpg"]
    assert paths.val.image_dir.endswith("val/images") and paths.val.json_file.endswith("val/annotations.json")


def test_rerun_reuses_and_foreign_folder_is_refused(tmp_path):
    out = tmp_path / "d"
    generate_dataset(str(out), 4, 2, 32, seed=0)
    first = (out / "train" / "images" / "000001.jpg").stat().st_mtime_ns
    generate_dataset(str(out), 4, 2, 32, seed=0)  # same arguments: nothing rewritten
    assert (out / "train" / "images" / "000001.jpg").stat().st_mtime_ns == first
    generate_dataset(str(out), 3, 2, 32, seed=1)  # other arguments: regenerated in place
    assert len(list((out / "train" / "images").iterdir())) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_dataset(str(foreign), 4, 2, 32)
    assert (foreign / "keep.txt").exists()


def test_bad_arguments():
    with pytest.raises(ValueError):
        class_names(MAX_CLASSES + 1)
    with pytest.raises(ValueError, match="val_fraction"):
        generate_dataset("/tmp/unused-dir-x", 4, 2, 32, val_fraction=1.0)


def test_generator_and_automl_dataset_synth_do_not_import_torch(tmp_path):
    """Generating data needs numpy and Pillow only: the orchestrator's data preparation
    (and its container image) must not pay for importing torch."""
    code = (
        "import sys\n"
        "from automl.cli import main\n"
        f"main(['dataset', 'synth', '--out', {str(tmp_path / 'set')!r}, '--num-images', '4', '--size', '48'])\n"
        "from dino.data import generate_dataset\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "set" / "train" / "annotations.json").exists()
