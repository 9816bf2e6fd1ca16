import os
import tarfile
from pathlib import Path

import pytest

from automl.datasets import UnsafeArchiveError, stage, stage_sources
from automl.errors import DatasetError


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "entries").iterdir()) if (cache / "entries").exists() else []


def test_folder_with_images_is_used_in_place(tmp_path, coco_split):
    split = coco_split(tmp_path / "train")
    staged = stage(split, tmp_path / "cache")
    assert staged.image_dir == (split / "images").resolve()
    assert staged.json_file == (split / "annotations.json").resolve()
    assert not staged.staged_now
    assert entries(tmp_path / "cache") == []
    assert staged.as_spec_source() == {"image_dir": str(staged.image_dir), "json_file": str(staged.json_file)}


def test_folder_with_archive_is_extracted_once_and_keyed_by_mtime(tmp_path, coco_split):
    split = coco_split(tmp_path / "train", archive=True, keep_folder=False)
    cache = tmp_path / "cache"
    first = stage(split, cache)
    assert first.staged_now
    assert first.image_dir.name == "images"  # the folder named after the archive stem
    assert first.image_dir.is_relative_to(cache / "entries")
    assert sorted(p.name for p in first.image_dir.iterdir()) == [f"{i:04d}.png" for i in range(6)]
    assert first.json_file == (split / "annotations.json").resolve()

    again = stage(split / "images.tar.gz", cache)  # the archive itself: same identity
    assert (again.image_dir, again.staged_now) == (first.image_dir, False)
    assert len(entries(cache)) == 1

    archive = split / "images.tar.gz"
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    changed = stage(split, cache)
    assert changed.staged_now and changed.image_dir != first.image_dir
    assert len(entries(cache)) == 2
    assert list((cache / "tmp").iterdir()) == []


def test_leftovers_of_a_crashed_worker_are_cleared(tmp_path, coco_split):
    split = coco_split(tmp_path / "train", archive=True, keep_folder=False)
    cache = tmp_path / "cache"
    first = stage(split, cache)
    entry = first.image_dir.parent.parent
    name = entry.name
    # pretend a worker died mid-extraction of a newer version: no entry, a stale work folder
    os.rename(entry, tmp_path / "moved-away")
    stale = cache / "tmp" / f"{name}.99999.deadbeef" / "entry" / "data" / "images"
    stale.mkdir(parents=True)
    (stale / "half.png").write_bytes(b"\x89PNG partial")
    again = stage(split, cache)
    assert again.staged_now and again.image_dir == first.image_dir
    assert sorted(p.name for p in again.image_dir.iterdir()) == [f"{i:04d}.png" for i in range(6)]
    assert list((cache / "tmp").iterdir()) == []


def test_archive_without_top_folder_uses_the_extraction_root(tmp_path, coco_split):
    split = coco_split(tmp_path / "flat")
    with tarfile.open(split / "images.tar.gz", "w:gz") as tf:
        for p in sorted((split / "images").iterdir()):
            tf.add(p, arcname=p.name)
    staged = stage(split / "images.tar.gz", tmp_path / "cache")
    assert (staged.image_dir / "0000.png").is_file()


def test_hostile_archive_in_a_folder_leaves_no_cache_entry(tmp_path, coco_split):
    split = tmp_path / "evil"
    split.mkdir()
    (split / "annotations.json").write_text('{"images": [], "annotations": [], "categories": []}')
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    with tarfile.open(split / "images.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("images/x")
        info.type, info.linkname = tarfile.SYMTYPE, str(sentinel)
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="symlink to the absolute path"):
        stage(split, tmp_path / "cache")
    assert entries(tmp_path / "cache") == [] and list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert list(sentinel.iterdir()) == []


def test_folder_layout_errors_say_what_is_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"no annotations.json in it \(found: labels.json\)"):
        stage(empty, tmp_path / "cache")
    (empty / "annotations.json").write_text("{}")
    with pytest.raises(DatasetError, match="neither images/ nor images.tar.gz"):
        stage(empty, tmp_path / "cache")


def test_missing_val_reuses_train(tmp_path, coco_split):
    split = coco_split(tmp_path / "train")
    both = stage_sources(str(split), None, tmp_path / "cache")
    assert both.val_is_train and both.val == both.train
    val = coco_split(tmp_path / "val", n_images=2, seed=1)
    both = stage_sources(split, str(val), tmp_path / "cache")
    assert not both.val_is_train and both.val.image_dir == (val / "images").resolve()
