"""Staging from a real S3-compatible server (moto's HTTP server on 127.0.0.1)."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from automl.datasets import S3Prefix, UnsafeArchiveError, preflight, stage, stage_sources
from automl.errors import DatasetError


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stage_prefix_then_cache_hit_then_changed_object(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "train", archive=True)
    uploader(s3.client, bucket, "datasets/train", split)
    cache = tmp_path / "cache"

    first = stage(f"s3://{bucket}/datasets/train", cache, client=s3.client)
    assert first.staged_now
    assert (s3.gets_of("images.tar.gz"), s3.gets_of("annotations.json")) == (1, 1)
    assert first.image_dir.name == "images"
    assert digest_tree(first.image_dir) == digest_tree(split / "images")
    assert json.loads(first.json_file.read_text()) == json.loads((split / "annotations.json").read_text())
    assert not [f for f in preflight(first, first) if f.is_error]

    again = stage(f"s3://{bucket}/datasets/train/", cache, client=s3.client)
    assert not again.staged_now
    assert (again.image_dir, again.json_file) == (first.image_dir, first.json_file)
    assert (s3.gets_of("images.tar.gz"), s3.gets_of("annotations.json")) == (1, 1)  # nothing downloaded again

    # a new archive under the same key: new ETag -> downloaded and extracted again
    new = coco_split(tmp_path / "train-v2", n_images=3, seed=7, archive=True)
    s3.client.upload_file(str(new / "images.tar.gz"), bucket, "datasets/train/images.tar.gz")
    changed = stage(f"s3://{bucket}/datasets/train", cache, client=s3.client)
    assert changed.staged_now
    assert (s3.gets_of("images.tar.gz"), s3.gets_of("annotations.json")) == (2, 1)
    assert changed.image_dir != first.image_dir
    assert digest_tree(changed.image_dir) == digest_tree(new / "images")
    assert digest_tree(first.image_dir) == digest_tree(split / "images")  # old entry untouched


def test_archive_uri_and_client_from_environment(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "val", archive=True)
    uploader(s3.client, bucket, "val", split)
    # no client given: built from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_DEFAULT_REGION
    staged = stage(f"s3://{bucket}/val/images.tar.gz", tmp_path / "cache")
    assert staged.staged_now and digest_tree(staged.image_dir) == digest_tree(split / "images")
    assert staged.json_file.read_bytes() == (split / "annotations.json").read_bytes()


def test_images_folder_layout(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "train")
    uploader(s3.client, bucket, "folder", split, layout="folder")
    cache = tmp_path / "cache"
    staged = stage(f"s3://{bucket}/folder", cache, client=s3.client)
    assert staged.image_dir.name == "images" and digest_tree(staged.image_dir) == digest_tree(split / "images")
    assert (s3.gets_of(".png"), s3.gets_of("annotations.json")) == (6, 1)
    assert not stage(f"s3://{bucket}/folder", cache, client=s3.client).staged_now
    assert (s3.gets_of(".png"), s3.gets_of("annotations.json")) == (6, 1)
    s3.client.put_object(Bucket=bucket, Key="folder/images/0000.png", Body=(split / "images" / "0001.png").read_bytes())
    changed = stage(f"s3://{bucket}/folder", cache, client=s3.client)
    assert changed.staged_now and changed.image_dir != staged.image_dir
    assert (changed.image_dir / "0000.png").read_bytes() == (split / "images" / "0001.png").read_bytes()


def test_concurrent_threads_stage_one_intact_copy(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "train", n_images=12, archive=True)
    uploader(s3.client, bucket, "train", split)
    cache = tmp_path / "cache"
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(stage(f"s3://{bucket}/train", cache, client=s3.client))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len({(r.image_dir, r.json_file) for r in results}) == 1
    assert any(r.staged_now for r in results)
    assert (s3.gets_of("images.tar.gz"), s3.gets_of("annotations.json")) == (1, 1)
    assert digest_tree(results[0].image_dir) == digest_tree(split / "images")
    assert len(list((cache / "entries").iterdir())) == 2  # the archive's and the annotations' entries
    assert list((cache / "tmp").iterdir()) == []


def test_concurrent_processes_stage_one_intact_copy(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "train", n_images=12, archive=True)
    uploader(s3.client, bucket, "train", split)
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    code = (
        "import json, os, sys, time\n"
        "from automl.datasets import stage\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        f"s = stage('s3://{bucket}/train', {str(cache)!r})\n"
        "print(json.dumps([str(s.image_dir), s.staged_now]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    go.touch()  # both import first, then race
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0][0] == outs[1][0]
    assert (s3.gets_of("images.tar.gz"), s3.gets_of("annotations.json")) == (1, 1)
    assert digest_tree(Path(outs[0][0])) == digest_tree(split / "images")
    assert list((cache / "tmp").iterdir()) == []


def test_hostile_archive_from_s3_is_refused_and_not_cached(tmp_path, s3, bucket):
    evil = tmp_path / "images.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 0
        tf.addfile(info)
    s3.client.upload_file(str(evil), bucket, "evil/images.tar.gz")
    s3.client.put_object(Bucket=bucket, Key="evil/annotations.json", Body=b"{}")
    cache = tmp_path / "cache" / "deep"
    with pytest.raises(UnsafeArchiveError, match="path traversal"):
        stage(f"s3://{bucket}/evil", cache, client=s3.client)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "cache" / "escaped.txt").exists()
    assert [p.name.split("-")[0] for p in (cache / "entries").iterdir()] == ["annotations.json"]  # no images entry
    assert list((cache / "tmp").iterdir()) == []


def test_s3_errors_name_the_object_and_the_fix(tmp_path, s3, bucket, coco_split, uploader):
    with pytest.raises(DatasetError, match=r"no annotations.json object under it \(found: nothing\)"):
        stage(f"s3://{bucket}/nothing-here", tmp_path / "cache", client=s3.client)
    with pytest.raises(DatasetError, match="NoSuchBucket.*check the bucket name"):
        stage("s3://no-such-bucket-xyz/train", tmp_path / "cache", client=s3.client)
    with pytest.raises(DatasetError, match=r"no object s3://.*/missing/images.tar.gz"):
        stage(f"s3://{bucket}/missing/images.tar.gz", tmp_path / "cache", client=s3.client)
    s3.client.put_object(Bucket=bucket, Key="half/annotations.json", Body=b"{}")
    with pytest.raises(DatasetError, match="neither images.tar.gz nor images/"):
        stage(f"s3://{bucket}/half", tmp_path / "cache", client=s3.client)


def test_stage_sources_shares_one_client_and_reuses_train(tmp_path, coco_split, s3, bucket, uploader):
    split = coco_split(tmp_path / "train", archive=True)
    uploader(s3.client, bucket, "train", split)
    both = stage_sources(S3Prefix(bucket, "train"), None, tmp_path / "cache", client=s3.client)
    assert both.val_is_train and both.val is both.train
    codes = [f.code for f in preflight(both.train, both.val)]
    assert codes == ["val_reuses_train"]


def test_download_refuses_an_object_replaced_since_it_was_listed(tmp_path, s3, bucket):
    from automl.datasets import s3 as s3mod

    s3.client.put_object(Bucket=bucket, Key="x/annotations.json", Body=b'{"v": 1}')
    listed = s3mod.head(s3.client, bucket, "x/annotations.json")
    s3.client.put_object(Bucket=bucket, Key="x/annotations.json", Body=b'{"v": 2}')
    with pytest.raises(DatasetError, match="changed while it was being staged"):
        s3mod.download(s3.client, listed, tmp_path / "a.json")
    assert s3mod.head(s3.client, bucket, "x/missing.json") is None


def test_progress_bars_on_request(tmp_path, coco_split, s3, bucket, uploader, capfd):
    split = coco_split(tmp_path / "train", archive=True)
    uploader(s3.client, bucket, "train", split)
    staged = stage(f"s3://{bucket}/train", tmp_path / "cache", client=s3.client, progress=True)
    err = capfd.readouterr().err
    assert staged.staged_now
    assert "downloading s3://" in err and "extracting images.tar.gz" in err
