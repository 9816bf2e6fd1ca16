"""Fixtures: small COCO splits written with PIL, tar builders, and a real S3 server (moto).

The S3 server is moto's ThreadedMotoServer on 127.0.0.1 (a free port), reached over
HTTP by real boto3 clients; nothing in boto3 is patched.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import tarfile
import uuid
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image


def write_coco_split(
    root: Path,
    n_images: int = 6,
    n_classes: int = 3,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    archive: bool = False,
    keep_folder: bool = True,
) -> Path:
    """Write ``root/images/*.png`` + ``root/annotations.json`` (category ids 1..n_classes).

    With ``archive``, also ``root/images.tar.gz`` holding the top folder ``images/``; with
    ``keep_folder=False`` the loose folder is then removed (archive-only layout).
    """
    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    images, annotations = [], []
    for i in range(n_images):
        name = f"{i:04d}.png"
        img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        bw, bh = rng.randint(4, w // 2), rng.randint(4, h // 2)
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        img.paste((255, 255, 255), (x, y, x + bw, y + bh))
        img.save(images_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1 + i % n_classes, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0}
        )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    if archive:
        with tarfile.open(root / "images.tar.gz", "w:gz") as tf:
            tf.add(images_dir, arcname="images")
        if not keep_folder:
            for p in images_dir.iterdir():
                p.unlink()
            images_dir.rmdir()
    return root


@pytest.fixture
def coco_split() -> Callable[..., Path]:
    return write_coco_split


def add_member(tf: tarfile.TarFile, name: str, data: bytes | None = None, **attrs) -> None:
    """Add a raw member (any type, any name) to an open tar: the hostile-archive builder."""
    info = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(info, k, v)
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


@pytest.fixture
def tar_builder(tmp_path: Path) -> Callable[..., Path]:
    """``build(name, [(member_name, data_or_None, attrs), ...]) -> archive path``."""

    def build(name: str, members: list[tuple[str, bytes | None, dict]]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tf:
            for member_name, data, attrs in members:
                add_member(tf, member_name, data, **attrs)
        return path

    return build


# ----------------------------------------------------------------------------- S3


class ServerLog(logging.Handler):
    """Requests as the S3 server saw them (from its werkzeug access log): what really went over HTTP."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def gets_of(self, key_suffix: str) -> int:
        """GET requests of objects whose key ends with ``key_suffix`` (not listings)."""
        pattern = re.compile(r'"GET (\S+) HTTP')
        paths = [m.group(1) for line in self.lines if (m := pattern.search(line))]
        return sum(1 for p in paths if "?" not in p and p.endswith(key_suffix))


class CountingClient:
    """A real boto3 client, and the server's record of the object GETs it (and others) sent."""

    def __init__(self, endpoint: str, log: ServerLog) -> None:
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.log = log

    def gets_of(self, key_suffix: str) -> int:
        return self.log.gets_of(key_suffix)


@pytest.fixture
def s3(aws_env: str) -> CountingClient:
    log = ServerLog()
    logger = logging.getLogger("werkzeug")
    logger.setLevel(logging.INFO)
    logger.addHandler(log)
    try:
        yield CountingClient(aws_env, log)
    finally:
        logger.removeHandler(log)


@pytest.fixture
def bucket(s3: CountingClient) -> str:
    name = f"ds-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=name)
    return name


def upload_split(client, bucket: str, prefix: str, split_dir: Path, layout: str = "archive") -> None:
    """Upload a split as ``images.tar.gz`` + ``annotations.json`` or as ``images/`` objects."""
    client.upload_file(str(split_dir / "annotations.json"), bucket, f"{prefix}/annotations.json")
    if layout == "archive":
        client.upload_file(str(split_dir / "images.tar.gz"), bucket, f"{prefix}/images.tar.gz")
    else:
        for p in sorted((split_dir / "images").iterdir()):
            client.upload_file(str(p), bucket, f"{prefix}/images/{p.name}")


@pytest.fixture
def uploader() -> Callable[..., None]:
    return upload_split
