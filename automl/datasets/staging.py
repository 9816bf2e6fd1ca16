"""Stage a data source into a local cache: download once, extract safely, reuse.

Cache layout (``cache_dir``)::

    entries/<name>-<hash>/          one complete entry per object identity
        data/images/...             an extracted archive (or downloaded images/ objects)
        annotations.json            a downloaded annotations object
        .staged.json                the identity the entry was built from
    locks/<name>-<hash>.lock        flock taken while an entry is built
    tmp/<name>-<hash>.<pid>.<rand>/ work folders; renamed into entries/ when complete

An entry is keyed by what identifies its bytes: an S3 object's endpoint, bucket, key,
ETag and size; a local archive's path, size and mtime. So a changed object gets a new
entry and an unchanged one is never fetched twice. Workers on one machine (or sharing
the cache folder over a filesystem with working ``flock``) serialize on the entry's lock;
the entry appears only by an atomic rename of a finished folder, so a crashed or killed
worker leaves at most a work folder, which the next builder removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from automl.datasets import s3
from automl.datasets.locks import file_lock
from automl.datasets.progress import byte_progress
from automl.datasets.safe_extract import safe_extract, safe_parts
from automl.datasets.sources import (
    ANNOTATIONS_NAME,
    ARCHIVE_SUFFIXES,
    IMAGES_DIR_NAME,
    DataSource,
    LocalArchive,
    LocalFolder,
    S3Archive,
    S3Prefix,
    archive_stem,
    parse_source,
)
from automl.errors import DatasetError

log = logging.getLogger(__name__)

CACHE_ENV = "AUTOML_DATA_CACHE"


def default_cache_dir() -> Path:
    """``$AUTOML_DATA_CACHE``, else ``$XDG_CACHE_HOME/automl/datasets`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "automl" / "datasets"


@dataclass(frozen=True)
class StagedSplit:
    """A split ready for the trainer: ``dataset.*_data_sources: [{image_dir, json_file}]``.

    ``staged_now`` is True when this call downloaded or extracted something (False for a
    cache hit or a folder used in place).
    """

    image_dir: Path
    json_file: Path
    source: str = ""
    staged_now: bool = False

    def as_spec_source(self) -> dict[str, str]:
        return {"image_dir": str(self.image_dir), "json_file": str(self.json_file)}

    def same_files(self, other: StagedSplit | None) -> bool:
        return other is not None and (self.image_dir, self.json_file) == (other.image_dir, other.json_file)


@dataclass(frozen=True)
class StagedSources:
    """Both splits; ``val_is_train`` when no validation source was given (train is reused)."""

    train: StagedSplit
    val: StagedSplit
    val_is_train: bool


# ----------------------------------------------------------------------------- cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40] or "entry"


class StagingCache:
    """Complete, immutable entries keyed by identity, each built at most once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def entry_path(self, hint: str, identity: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        return self.root / "entries" / f"{_slug(hint)}-{digest}"

    def get_or_build(self, hint: str, identity: dict[str, Any], build: Callable[[Path, Path], None]) -> tuple[Path, bool]:
        """Return ``(entry, built_now)``; ``build(out, work)`` fills the empty folder ``out``.

        ``work`` is a scratch folder (for a downloaded archive) removed afterwards.
        """
        final = self.entry_path(hint, identity)
        if final.is_dir():  # complete entries only ever appear by rename
            return final, False
        name = final.name
        with file_lock(self.root / "locks" / f"{name}.lock", what=f"the staged copy of {hint}"):
            if final.is_dir():  # another worker built it while we waited
                return final, False
            tmp = self.root / "tmp"
            for stale in tmp.glob(f"{name}.*"):  # left by a crashed builder; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            work = tmp / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            out = work / "entry"
            out.mkdir(parents=True)
            try:
                build(out, work)
                record = {"identity": identity, "staged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                (out / ".staged.json").write_text(json.dumps(record, indent=2))
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(out, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return final, True


def _extracted_image_dir(data: Path, stem: str) -> Path:
    """The folder named after the archive stem when the archive has it on top, else ``data``."""
    top = data / stem
    return top if top.is_dir() else data


# ----------------------------------------------------------------------------- staging


class _Stager:
    def __init__(self, cache: StagingCache, client: Any, progress: bool | None) -> None:
        self.cache = cache
        self._client = client
        self.progress = progress

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3.make_client()
        return self._client

    def stage(self, src: DataSource) -> StagedSplit:
        if isinstance(src, LocalFolder):
            return self.local_folder(src)
        if isinstance(src, LocalArchive):
            return self.local_archive(src.path, src.annotations, str(src))
        if isinstance(src, S3Archive):
            return self.s3_archive(src)
        if isinstance(src, S3Prefix):
            return self.s3_prefix(src)
        raise TypeError(f"not a data source: {src!r}")

    # -- local

    def local_folder(self, src: LocalFolder) -> StagedSplit:
        folder = src.path
        ann = folder / ANNOTATIONS_NAME

        def found() -> str:  # only on error: the folder may be a huge images folder
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
            return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "") or "nothing"

        if not ann.is_file():
            raise DatasetError(
                f"data source {folder}: no {ANNOTATIONS_NAME} in it (found: {found()}); "
                f"put the COCO annotations there as {ANNOTATIONS_NAME}"
            )
        images = folder / IMAGES_DIR_NAME
        if images.is_dir():
            return StagedSplit(images, ann, str(src), staged_now=False)
        for suffix in ARCHIVE_SUFFIXES:
            archive = folder / f"{IMAGES_DIR_NAME}{suffix}"
            if archive.is_file():
                return self.local_archive(archive, ann, str(src))
        raise DatasetError(
            f"data source {folder}: has {ANNOTATIONS_NAME} but neither {IMAGES_DIR_NAME}/ nor "
            f"{IMAGES_DIR_NAME}.tar.gz (found: {found()}); add the images folder or archive"
        )

    def local_archive(self, archive: Path, ann: Path, label: str) -> StagedSplit:
        st = archive.stat()
        stem = archive_stem(archive.name) or archive.name
        identity = {"kind": "local-archive", "path": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

        def build(out: Path, work: Path) -> None:
            safe_extract(archive, out / "data", progress=self.progress)

        entry, built = self.cache.get_or_build(stem, identity, build)
        return StagedSplit(_extracted_image_dir(entry / "data", stem), ann, label, staged_now=built)

    # -- S3

    def _object_entry(self, obj: s3.ObjectInfo) -> tuple[Path, bool]:
        """A downloaded copy of a single (small) object, e.g. annotations.json."""
        name = obj.key.rsplit("/", 1)[-1]
        identity = self._identity("s3-object", obj)

        def build(out: Path, work: Path) -> None:
            with byte_progress(f"downloading {obj.uri}", obj.size, self.progress) as advance:
                s3.download(self.client, obj, out / name, advance)

        entry, built = self.cache.get_or_build(name, identity, build)
        return entry / name, built

    def _identity(self, kind: str, obj: s3.ObjectInfo) -> dict[str, Any]:
        return {"kind": kind, "endpoint": s3.endpoint_of(self.client), "bucket": obj.bucket, "key": obj.key, "etag": obj.etag, "size": obj.size}

    def _archive_entry(self, obj: s3.ObjectInfo) -> tuple[Path, bool]:
        name = obj.key.rsplit("/", 1)[-1]
        stem = archive_stem(name) or name

        def build(out: Path, work: Path) -> None:
            local = work / name
            with byte_progress(f"downloading {obj.uri}", obj.size, self.progress) as advance:
                s3.download(self.client, obj, local, advance)
            safe_extract(local, out / "data", progress=self.progress)

        entry, built = self.cache.get_or_build(stem, self._identity("s3-archive", obj), build)
        return _extracted_image_dir(entry / "data", stem), built

    def _require(self, bucket: str, key: str, what: str) -> s3.ObjectInfo:
        obj = s3.head(self.client, bucket, key)
        if obj is None:
            raise DatasetError(f"no object s3://{bucket}/{key}; {what}")
        return obj

    def s3_archive(self, src: S3Archive) -> StagedSplit:
        archive = self._require(src.bucket, src.key, "check the URI (`aws s3 ls` the prefix)")
        ann = self._require(
            src.bucket, src.annotations_key, f"upload the COCO annotations beside the archive as {ANNOTATIONS_NAME}"
        )
        image_dir, built_images = self._archive_entry(archive)
        json_file, built_ann = self._object_entry(ann)
        return StagedSplit(image_dir, json_file, str(src), staged_now=built_images or built_ann)

    def s3_prefix(self, src: S3Prefix) -> StagedSplit:
        base = f"{src.prefix}/" if src.prefix else ""
        objects, folders = s3.list_objects(self.client, src.bucket, base, delimiter="/")
        by_name = {o.key[len(base) :]: o for o in objects}
        found = sorted(list(by_name) + [f[len(base) :] for f in folders])[:12]
        ann = by_name.get(ANNOTATIONS_NAME)
        if ann is None:
            raise DatasetError(
                f"data source {src}: no {ANNOTATIONS_NAME} object under it (found: {', '.join(found) or 'nothing'}); "
                f"upload the COCO annotations as {src.key(ANNOTATIONS_NAME)}"
            )
        json_file, built_ann = self._object_entry(ann)
        for suffix in ARCHIVE_SUFFIXES:
            archive = by_name.get(f"{IMAGES_DIR_NAME}{suffix}")
            if archive is not None:
                image_dir, built_images = self._archive_entry(archive)
                return StagedSplit(image_dir, json_file, str(src), staged_now=built_images or built_ann)
        if f"{base}{IMAGES_DIR_NAME}/" in folders:
            image_dir, built_images = self._folder_entry(src.bucket, f"{base}{IMAGES_DIR_NAME}/")
            return StagedSplit(image_dir, json_file, str(src), staged_now=built_images or built_ann)
        raise DatasetError(
            f"data source {src}: has {ANNOTATIONS_NAME} but neither {IMAGES_DIR_NAME}.tar.gz nor {IMAGES_DIR_NAME}/ "
            f"(found: {', '.join(found)}); upload the images archive as {src.key(IMAGES_DIR_NAME + '.tar.gz')}"
        )

    def _folder_entry(self, bucket: str, prefix: str) -> tuple[Path, bool]:
        """Download every object under ``prefix`` (an ``images/`` "folder")."""
        objects, _ = s3.list_objects(self.client, bucket, prefix)
        files: list[tuple[tuple[str, ...], s3.ObjectInfo]] = []
        for obj in objects:
            rel = obj.key[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue  # "folder" marker objects
            try:
                files.append((safe_parts(rel), obj))
            except ValueError as exc:
                raise DatasetError(f"refusing to stage {obj.uri}: its key {exc}; rename the object") from None
        listing = sorted((o.key, o.etag, o.size) for _, o in files)
        identity = {
            "kind": "s3-folder",
            "endpoint": s3.endpoint_of(self.client),
            "bucket": bucket,
            "prefix": prefix,
            "listing": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
        }

        def build(out: Path, work: Path) -> None:
            root = out / "data" / IMAGES_DIR_NAME
            total = sum(o.size for _, o in files)
            with byte_progress(f"downloading s3://{bucket}/{prefix}", total, self.progress) as advance:
                for parts, obj in files:
                    s3.download(self.client, obj, root.joinpath(*parts), advance)

        entry, built = self.cache.get_or_build(IMAGES_DIR_NAME, identity, build)
        return entry / "data" / IMAGES_DIR_NAME, built


def stage(
    source: DataSource | str | Path,
    cache_dir: Path | str | None = None,
    *,
    client: Any = None,
    progress: bool | None = None,
) -> StagedSplit:
    """Make one split available locally; returns the trainer's ``{image_dir, json_file}``.

    ``client``: a boto3 S3 client (default: :func:`automl.datasets.s3.make_client`, built
    only when an S3 source is staged). ``progress``: draw bars (None: for big transfers).
    """
    cache = StagingCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    return _Stager(cache, client, progress).stage(parse_source(source))


def stage_sources(
    train: DataSource | str | Path,
    val: DataSource | str | Path | None,
    cache_dir: Path | str | None = None,
    *,
    client: Any = None,
    progress: bool | None = None,
) -> StagedSources:
    """Stage both splits (sharing one S3 client); a missing ``val`` reuses the training split.

    The reuse is reported as a warning by :func:`automl.datasets.preflight.preflight`.
    """
    cache = StagingCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    stager = _Stager(cache, client, progress)
    staged_train = stager.stage(parse_source(train))
    if val is None or (isinstance(val, str) and not val.strip()):
        return StagedSources(staged_train, staged_train, val_is_train=True)
    return StagedSources(staged_train, stager.stage(parse_source(val)), val_is_train=False)
