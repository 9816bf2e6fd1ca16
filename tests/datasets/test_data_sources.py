from pathlib import Path

import pytest

from automl.datasets import LocalArchive, LocalFolder, S3Archive, S3Prefix, parse_source
from automl.errors import DatasetError


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://my-bucket/datasets/train", S3Prefix("my-bucket", "datasets/train")),
        ("s3://my-bucket/datasets/train/", S3Prefix("my-bucket", "datasets/train")),
        ("s3://my.bucket-1", S3Prefix("my.bucket-1", "")),
        ("s3://abc/x/images.tar.gz", S3Archive("abc", "x/images.tar.gz", "x/annotations.json")),
        ("s3://abc/images.tgz", S3Archive("abc", "images.tgz", "annotations.json")),
    ],
)
def test_s3_uris(uri, expected):
    assert parse_source(uri) == expected


@pytest.mark.parametrize(
    "uri, words",
    [
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3://My_Bucket/x", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/train/annotations.json", "names a JSON file"),
        ("gs://bucket/x", "gs:// scheme is not supported"),
        ("", "empty data source"),
    ],
)
def test_bad_uris_say_what_and_how(uri, words):
    with pytest.raises(DatasetError) as info:
        parse_source(uri)
    assert words in str(info.value)


def test_local_folder_archive_and_file_uri(tmp_path: Path):
    (tmp_path / "annotations.json").write_text("{}")
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(b"")
    assert parse_source(str(tmp_path)) == LocalFolder(tmp_path.resolve())
    assert parse_source(f"file://{tmp_path}") == LocalFolder(tmp_path.resolve())
    assert parse_source(archive) == LocalArchive(archive.resolve(), (tmp_path / "annotations.json").resolve())


def test_local_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        parse_source(tmp_path / "nope")
    lone = tmp_path / "lone" / "images.tar.gz"
    lone.parent.mkdir()
    lone.write_bytes(b"")
    with pytest.raises(DatasetError, match="no annotations.json beside the archive"):
        parse_source(lone)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(DatasetError, match="not an images archive"):
        parse_source(other)
