"""Generated COCO detection datasets: coloured shapes on textured backgrounds.

Deterministic by seed (each image draws from its own ``(seed, index)`` stream, so image
``i`` does not depend on ``num_images``). The class of an object is its shape (and, past
10 classes, its style: filled or outline), with ``class_colours`` also its hue (an easier
task that a tiny CPU model learns in minutes); colour, size, aspect and position are random,
objects may overlap a little, and backgrounds carry gradients, blotches, noise and
unannotated line clutter. Written per split as ``images/`` + ``annotations.json`` and,
with ``archive``, ``images.tar.gz`` (top folder ``images/``): TAO's dataset artifact.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import tarfile

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "star", "hexagon", "t_shape", "l_shape", "half_disc")
STYLES = ("filled", "outline")
MAX_CLASSES = len(SHAPES) * len(STYLES)
OBJECTS = (1, 6)  # default min, max objects per image
OBJECT_SIZE = (1 / 16, 1 / 3)  # default range of an object's side, as a fraction of the image side
_FORMAT = 1  # bump when the drawing changes, so cached datasets are regenerated


@dataclasses.dataclass(frozen=True)
class SplitPaths:
    image_dir: str  # <out>/<split>/images
    json_file: str  # <out>/<split>/annotations.json
    archive: str | None  # <out>/<split>/images.tar.gz when archived
    num_images: int


@dataclasses.dataclass(frozen=True)
class DatasetPaths:
    root: str
    train: SplitPaths
    val: SplitPaths | None
    categories: list[dict]  # [{"id": 1, "name": "circle"}, ...]


def class_names(num_classes: int) -> list[str]:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    names = []
    for k in range(num_classes):
        shape, style = SHAPES[k % len(SHAPES)], STYLES[k // len(SHAPES)]
        names.append(shape if style == "filled" else f"{shape}_{style}")
    return names


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """The outline of ``shape`` in the unit square, touching all four sides."""
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "cross":
        a, b = 0.35, 0.65
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "t_shape":
        return [(0, 0), (1, 0), (1, 0.3), (0.65, 0.3), (0.65, 1), (0.35, 1), (0.35, 0.3), (0, 0.3)]
    if shape == "l_shape":
        return [(0, 0), (0.35, 0), (0.35, 0.65), (1, 0.65), (1, 1), (0, 1)]
    if shape == "star":
        pts = [((0.4 if k % 2 else 1.0) * math.sin(k * math.pi / 5), -(0.4 if k % 2 else 1.0) * math.cos(k * math.pi / 5))
               for k in range(10)]
    elif shape == "hexagon":
        pts = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    elif shape == "half_disc":
        pts = [(math.cos(math.pi + k * math.pi / 16), math.sin(math.pi + k * math.pi / 16)) for k in range(17)]
    else:
        raise ValueError(shape)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """``uint8[h, w, 3]``: base colour + gradient + low-frequency blotches + pixel noise."""
    base = rng.uniform(40, 215, 3)
    gx = np.linspace(-1, 1, w)[None, :, None] * rng.uniform(-50, 50, 3)
    gy = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(-50, 50, 3)
    blotch = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    blotch = (np.asarray(blotch, dtype=np.float32) - 128) * rng.uniform(0.1, 0.35)
    noise = rng.normal(0, rng.uniform(4, 18), (h, w, 3))
    return np.clip(base + gx + gy + blotch + noise, 0, 255).astype(np.uint8)


# Saturated hues, far apart (RGB); class k is drawn in hue k mod 10, jittered per object.
CLASS_COLOURS = ((230, 25, 25), (25, 90, 235), (245, 215, 20), (20, 190, 60), (235, 20, 200),
                 (20, 215, 225), (250, 130, 10), (120, 40, 200), (250, 250, 250), (15, 15, 15))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(seed: int, index: int, size: int, num_classes: int, objects: tuple[int, int],
                 object_size: tuple[float, float], class_colours: bool = False,
                 ) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    """One image and its objects as ``(category_id, [x, y, w, h])``."""
    rng = np.random.default_rng([seed, index])
    hue_rng = np.random.default_rng([seed, index, 1])
    arr = _background(rng, size, size)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # unannotated clutter lines
        pts = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.uniform(0, 255, 3)), width=int(rng.integers(1, 3)))
    n = 0 if rng.random() < 0.03 else int(rng.integers(objects[0], objects[1] + 1))
    placed: list[tuple[float, ...]] = []
    out = []
    for _ in range(n):
        cls = int(rng.integers(num_classes))
        side = rng.uniform(*object_size) * size
        aspect = math.sqrt(rng.uniform(0.6, 1.6))
        w, h = max(4.0, side * aspect), max(4.0, side / aspect)
        w, h = min(w, size - 2.0), min(h, size - 2.0)
        for _attempt in range(20):
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = (x0, y0, x0 + w, y0 + h)
            if all(_iou(box, p) < 0.3 for p in placed):
                break
        else:
            continue
        placed.append(box)
        bg = arr[int(y0):int(y0 + h) + 1, int(x0):int(x0 + w) + 1].reshape(-1, 3).mean(0)
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - bg).sum() < 150:
            colour = rng.uniform(0, 255, 3)
        if class_colours:  # its own stream: the boxes are those of the same image without hues
            colour = np.clip(np.array(CLASS_COLOURS[cls % len(CLASS_COLOURS)]) + hue_rng.uniform(-20, 20, 3), 0, 255)
        fill = tuple(int(c) for c in colour)
        shape, style = SHAPES[cls % len(SHAPES)], STYLES[cls // len(SHAPES)]
        width = max(2, int(min(w, h) / 6))
        x1, y1 = x0 + w - 1, y0 + h - 1  # PIL draws inclusive coordinates
        if shape == "circle":
            if style == "filled":
                draw.ellipse([x0, y0, x1, y1], fill=fill)
            else:
                draw.ellipse([x0, y0, x1, y1], outline=fill, width=width)
        else:
            pts = [(x0 + u * (w - 1), y0 + v * (h - 1)) for u, v in _unit_polygon(shape)]
            if style == "filled":
                draw.polygon(pts, fill=fill)
            else:
                draw.polygon(pts, outline=fill, width=width)
        out.append((cls + 1, [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)]))
    return img, out


# Rendering is numpy work of ~10 ms an image at 320 px (its noise): the GPU smoke's 600
# images took 10 s of an idle GPU before the first trial on an H200. Each image depends
# only on (seed, index), so worker processes write the same files in any order.
PARALLEL_FROM = 64  # images; fewer are rendered here (a worker's start costs more)
MAX_WORKERS = 8


def _render_to_file(job: tuple) -> list[tuple[int, list[float]]]:
    path, seed, index, size, num_classes, objects, object_size, class_colours = job
    img, objs = render_image(seed, index, size, num_classes, objects, object_size, class_colours)
    img.save(path, quality=92)
    return objs


def _render_all(jobs: list[tuple]) -> list[list[tuple[int, list[float]]]]:
    """Every job's objects, in order; in worker processes (spawned: the caller may hold
    threads) when there are many."""
    workers = min(MAX_WORKERS, os.cpu_count() or 1, len(jobs) // (PARALLEL_FROM // 2) or 1)
    if len(jobs) < PARALLEL_FROM or workers < 2:
        return [_render_to_file(job) for job in jobs]
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_render_to_file, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _write_split(split_dir: str, seed: int, indices: range, size: int, num_classes: int, archive: bool,
                 objects: tuple[int, int], object_size: tuple[float, float], class_colours: bool) -> SplitPaths:
    image_dir = os.path.join(split_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    names = [f"{image_id:06d}.jpg" for image_id in range(1, len(indices) + 1)]
    rendered = _render_all([(os.path.join(image_dir, name), seed, index, size, num_classes, objects, object_size,
                             class_colours) for name, index in zip(names, indices)])
    images, annotations = [], []
    for image_id, (name, objs) in enumerate(zip(names, rendered), start=1):
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for cat, bbox in objs:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": bbox, "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(class_names(num_classes))]
    json_file = os.path.join(split_dir, "annotations.json")
    with open(json_file + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    os.replace(json_file + ".tmp", json_file)
    archive_path = None
    if archive:
        archive_path = os.path.join(split_dir, "images.tar.gz")
        _tar_images(image_dir, [im["file_name"] for im in images], archive_path)
    return SplitPaths(image_dir, json_file, archive_path, len(images))


def _tar_images(image_dir: str, names: list[str], path: str) -> None:
    """``images.tar.gz`` holding ``images/<name>``; byte-identical for identical inputs."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    with open(path + ".tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(image_dir, arcname="images", recursive=False, filter=clean)
        for name in names:
            tar.add(os.path.join(image_dir, name), arcname=f"images/{name}", filter=clean)
    os.replace(path + ".tmp", path)


def layout_problem(objects: tuple[int, int], object_size: tuple[float, float]) -> str | None:
    """What is wrong with an ``objects`` / ``object_size`` pair, or None."""
    if not 0 <= objects[0] <= objects[1]:
        return f"objects must be [min, max] with 0 <= min <= max, got {list(objects)}"
    if not 0 < object_size[0] <= object_size[1] <= 1:
        return f"object_size must be [min, max] with 0 < min <= max <= 1, got {list(object_size)}"
    return None


def generate_dataset(out_dir: str, num_images: int, num_classes: int, image_size: int = 512, seed: int = 0,
                     val_fraction: float = 0.2, archive: bool = False, *, objects: tuple[int, int] = OBJECTS,
                     object_size: tuple[float, float] = OBJECT_SIZE, class_colours: bool = False) -> DatasetPaths:
    """Write ``<out_dir>/train`` and ``<out_dir>/val`` (if ``val_fraction`` > 0) and return their paths.

    ``objects``: min/max objects per image (3% of images get none); ``object_size``: the
    range of an object's side as a fraction of ``image_size``; ``class_colours``: each class
    also has its own hue. A folder already generated
    with the same arguments is reused as is; a non-empty folder from anything else is refused.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    problem = layout_problem(objects, object_size)
    if problem:
        raise ValueError(problem)
    names = class_names(num_classes)
    n_val = 0 if val_fraction == 0 else max(1, round(num_images * val_fraction))
    n_train = num_images - n_val
    if n_train < 1:
        raise ValueError(f"val_fraction {val_fraction} leaves no training images of {num_images}")
    params = {"format": _FORMAT, "num_images": num_images, "num_classes": num_classes, "image_size": image_size,
              "seed": seed, "val_fraction": val_fraction, "archive": archive, "objects": list(objects),
              "object_size": list(object_size), **({"class_colours": True} if class_colours else {})}
    marker = os.path.join(out_dir, "synth.json")
    done = os.path.isfile(marker) and _read_json(marker) == params
    if not done:
        if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(marker):
            raise FileExistsError(f"{out_dir} is not empty and was not written by the generator; pick a new --out")
        if os.path.isfile(marker):
            os.remove(marker)  # other arguments: rewrite in place
            for split in ("train", "val"):
                _clear_split(os.path.join(out_dir, split))
        os.makedirs(out_dir, exist_ok=True)
    split_args = (num_classes, archive, tuple(objects), tuple(object_size), class_colours)
    if done:
        train = _existing(os.path.join(out_dir, "train"), archive, n_train)
        val = _existing(os.path.join(out_dir, "val"), archive, n_val) if n_val else None
    else:
        train = _write_split(os.path.join(out_dir, "train"), seed, range(n_train), image_size, *split_args)
        val = (_write_split(os.path.join(out_dir, "val"), seed, range(n_train, num_images), image_size, *split_args)
               if n_val else None)
        with open(marker, "w", encoding="utf-8") as f:
            json.dump(params, f)
    return DatasetPaths(os.path.abspath(out_dir), train, val, [{"id": k + 1, "name": n} for k, n in enumerate(names)])


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _existing(split_dir: str, archive: bool, n: int) -> SplitPaths:
    return SplitPaths(os.path.join(split_dir, "images"), os.path.join(split_dir, "annotations.json"),
                      os.path.join(split_dir, "images.tar.gz") if archive else None, n)


def _clear_split(split_dir: str) -> None:
    """Remove only what :func:`_write_split` writes."""
    image_dir = os.path.join(split_dir, "images")
    if os.path.isdir(image_dir):
        for name in os.listdir(image_dir):
            if name.endswith(".jpg"):
                os.remove(os.path.join(image_dir, name))
    for name in ("annotations.json", "images.tar.gz"):
        if os.path.isfile(os.path.join(split_dir, name)):
            os.remove(os.path.join(split_dir, name))
