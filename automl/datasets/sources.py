"""Where a dataset split comes from: a local folder, a local archive, or an S3 location.

A source is parsed once, at the edge, from the text a user wrote (run config or CLI);
everything inside receives one of the typed models below.

Layouts understood (the TAO artifact is ``images.tar.gz`` + ``annotations.json``, and
the runtime spec points at the folder named after the archive stem, ``images``):

- ``/data/train``: a folder holding ``annotations.json`` and either ``images/`` or
  ``images.tar.gz`` (also ``.tgz``, ``.tar``).
- ``/data/train/images.tar.gz``: an archive; ``annotations.json`` lies beside it.
- ``s3://bucket/prefix``: objects ``prefix/annotations.json`` and either
  ``prefix/images.tar.gz`` or ``prefix/images/...``.
- ``s3://bucket/prefix/images.tar.gz``: an archive object; ``annotations.json`` beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from automl.errors import DatasetError

ANNOTATIONS_NAME = "annotations.json"
IMAGES_DIR_NAME = "images"
# longest first, so "x.tar.gz" is not read as "x.tar" + ".gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar")

# S3 bucket naming rules (the subset every S3-compatible store accepts)
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def archive_stem(name: str) -> str | None:
    """``images.tar.gz`` -> ``images``; None when ``name`` is not an archive we extract."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class LocalFolder:
    """A folder with ``annotations.json`` and ``images/`` or ``images.tar.gz``."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class LocalArchive:
    """An images archive file; ``annotations`` is the COCO file beside it."""

    path: Path
    annotations: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class S3Prefix:
    """``s3://bucket/prefix``: ``prefix`` has no leading or trailing slash ('' = bucket root)."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Archive:
    """``s3://bucket/dir/images.tar.gz``; the COCO file is ``annotations_key`` beside it."""

    bucket: str
    key: str
    annotations_key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


DataSource = LocalFolder | LocalArchive | S3Prefix | S3Archive


def parse_source(text: str | Path | DataSource) -> DataSource:
    """Parse a user-written source; raises DatasetError saying what is wrong and the fix.

    Local paths must exist (so a typo fails here, not in a trial); S3 URIs are checked
    for form only, the objects are looked up when staged.
    """
    if isinstance(text, (LocalFolder, LocalArchive, S3Prefix, S3Archive)):
        return text
    raw = str(text).strip()
    if not raw:
        raise DatasetError("empty data source: give a local folder, a local .tar.gz archive or an s3://bucket/prefix URI")
    if raw.startswith("s3://"):
        return _parse_s3(raw)
    if raw.startswith("file://"):
        raw = raw[len("file://") :]
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", raw):
        scheme = raw.split("://", 1)[0]
        raise DatasetError(
            f"data source {raw!r}: the {scheme}:// scheme is not supported; "
            "use a local path, file://PATH or s3://bucket/prefix (S3-compatible stores via AWS_ENDPOINT_URL)"
        )
    return _parse_local(Path(raw).expanduser())


def _parse_s3(raw: str) -> DataSource:
    rest = raw[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise DatasetError(
            f"data source {raw!r}: {bucket!r} is not a valid S3 bucket name "
            "(3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit); "
            "write it as s3://bucket/prefix"
        )
    key = key.strip("/")
    if "//" in key or any(part in (".", "..") for part in key.split("/") if key):
        raise DatasetError(f"data source {raw!r}: the key {key!r} has empty, '.' or '..' parts; write a plain prefix such as s3://{bucket}/datasets/train")
    name = key.rsplit("/", 1)[-1]
    if key and archive_stem(name) is not None:
        parent = key.rsplit("/", 1)[0] if "/" in key else ""
        ann = f"{parent}/{ANNOTATIONS_NAME}" if parent else ANNOTATIONS_NAME
        return S3Archive(bucket=bucket, key=key, annotations_key=ann)
    if name.lower().endswith(".json"):
        raise DatasetError(
            f"data source {raw!r} names a JSON file; point at the prefix that holds "
            f"{ANNOTATIONS_NAME} and images.tar.gz (s3://{bucket}/{key.rsplit('/', 1)[0] if '/' in key else ''})"
        )
    return S3Prefix(bucket=bucket, prefix=key)


def _parse_local(path: Path) -> DataSource:
    if not path.exists():
        raise DatasetError(
            f"data source {str(path)!r} does not exist; give a folder holding {ANNOTATIONS_NAME} and "
            f"{IMAGES_DIR_NAME}/ (or {IMAGES_DIR_NAME}.tar.gz), or an s3:// URI"
        )
    path = path.resolve()
    if path.is_dir():
        return LocalFolder(path)
    if archive_stem(path.name) is not None:
        ann = path.parent / ANNOTATIONS_NAME
        if not ann.is_file():
            raise DatasetError(
                f"data source {str(path)!r}: no {ANNOTATIONS_NAME} beside the archive (looked for {ann}); "
                f"put the COCO annotations there, or point at a folder holding both"
            )
        return LocalArchive(path=path, annotations=ann)
    raise DatasetError(
        f"data source {str(path)!r} is a file but not an images archive ({', '.join(ARCHIVE_SUFFIXES)}); "
        f"point at the folder holding {ANNOTATIONS_NAME} and {IMAGES_DIR_NAME}/ instead"
    )
