"""COCO detection data: one or more COCO sources merged into one dataset.

Category ids are used directly as class indices (TAO's convention), so training needs
``num_classes > max(category_id)``. Crowd boxes never reach the model (COCOeval still
sees them in the ground truth); images without boxes are kept; any PIL mode is
converted to RGB. Images are read as displayed (EXIF orientation applied) and boxes are
corrected by the data policy (:mod:`dino.data.policy`) before anything sees them, the
evaluation ground truth included.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from dino.config.spec import DataSource
from dino.data.policy import (
    BoxEntry,
    ImageEntry,
    PolicyReport,
    apply_orientation,
    apply_policy,
    positive_size,
    probe_images,
    refusal_text,
)


class DataError(ValueError):
    """The dataset is missing, unreadable or inconsistent with the spec; says where and the fix."""


def load_image(path: str) -> Image.Image:
    """An RGB PIL image from any mode (L, RGBA, P, CMYK, 16-bit, ...), as displayed: its
    EXIF orientation applied (:mod:`dino.data.policy`)."""
    try:
        with Image.open(path) as img:
            img.load()
            img = apply_orientation(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float32)
                hi = float(arr.max()) or 1.0
                img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype(np.uint8))
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def read_coco_json(source: DataSource, where: str) -> dict[str, Any]:
    """The parsed annotation file of ``source``; ``where`` names it in errors (spec path)."""
    if not source.json_file:
        raise DataError(f"{where}.json_file is empty: set it to a COCO annotation file")
    if not source.image_dir:
        raise DataError(f"{where}.image_dir is empty: set it to the folder holding the images")
    if not os.path.isdir(source.image_dir):
        raise DataError(f"{where}.image_dir not found or not a folder: {source.image_dir}")
    try:
        with open(source.json_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{where}.json_file not found: {source.json_file}") from None
    except OSError as exc:
        raise DataError(f"{where}.json_file cannot be read: {source.json_file}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}.json_file is not valid JSON: {source.json_file}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{where}.json_file is not a COCO file (no 'images' list): {source.json_file}")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(data: dict[str, Any], json_file: str) -> tuple[list[ImageEntry], list[BoxEntry]]:
    """The typed images and boxes of one COCO dict; malformed entries are errors here."""
    images, seen = [], set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str) \
                or not img["file_name"]:
            raise DataError(f"{json_file}: images[{i}] needs an integer 'id' and a 'file_name', "
                            f"got {json.dumps(img)[:80]}")
        if img["id"] in seen:
            raise DataError(f"{json_file}: images[{i}]: image id {img['id']} appears twice; give every image "
                            "a unique id")
        seen.add(img["id"])
        images.append(ImageEntry(img["id"], img["file_name"], positive_size(img.get("width")),
                                 positive_size(img.get("height"))))
    if not isinstance(data["annotations"], list):
        raise DataError(f"{json_file}: 'annotations' must be a list")
    boxes = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("category_id")) or "bbox" not in ann:
            raise DataError(f"{json_file}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'} "
                            f"(annotations[{i}]) needs a 'bbox' [x, y, w, h] and an integer 'category_id'")
        if ann.get("image_id") not in seen:
            raise DataError(f"{json_file}: annotations[{i}] (id {ann.get('id', '?')}) refers to image id "
                            f"{ann.get('image_id')!r}, which 'images' does not list; remove it or add the image")
        boxes.append(BoxEntry(i, ann.get("id"), ann["image_id"], ann["bbox"]))
    return images, boxes


def _shown(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def apply_data_policy(data: dict[str, Any], source: DataSource, where: str, strict: bool
                      ) -> tuple[dict[str, Any], PolicyReport]:
    """``data`` with the policy's corrections (boxes rescaled, clipped or dropped; image
    sizes those of the files as displayed) and the report of what changed. Every image
    file is probed (header only); a missing or unreadable one is an error here."""
    images, boxes = _entries(data, source.json_file)
    probed = probe_images({img.id: os.path.join(source.image_dir, img.file_name) for img in images})
    if probed.missing:
        raise DataError(f"{where_images(where)}: {len(probed.missing)} of {len(images)} image files listed in "
                        f"the annotations are missing: {_shown([p for _, p in probed.missing])}")
    if probed.unreadable:
        raise DataError(f"{where_images(where)}: cannot read image {_shown([f'{p} ({why})' for _, p, why in probed.unreadable])}")
    report = apply_policy(images, boxes, probed.probes, strict=strict, source=source.json_file)
    anns = []
    for i, ann in enumerate(data["annotations"]):
        box = report.boxes.get(i)
        if box is None:
            continue
        area = ann.get("area")
        area = float(area) * box.area_scale if _is_number(area) else box.w * box.h
        anns.append({**ann, "bbox": box.xywh(), "area": area})
    imgs = []
    for img in data["images"]:
        w, h = report.frames.get(img["id"], (img.get("width"), img.get("height")))
        imgs.append({**img, "width": w, "height": h})
    return {**data, "images": imgs, "annotations": anns}, report


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _merge(parts: list[tuple[dict[str, Any], str]], where: str) -> tuple[dict[str, Any], list[str]]:
    """One COCO dict from several sources and each image's file path. A single source keeps
    its image ids (results then match the user's file); several get new unique ones.
    Annotation ids are always renumbered 1..n; missing ``iscrowd`` is filled."""
    images, annotations, categories, paths = [], [], {}, []
    for k, (data, image_dir) in enumerate(parts):
        remap = {}
        for img in data["images"]:
            new_id = img["id"] if len(parts) == 1 else len(images) + 1
            remap[img["id"]] = new_id
            images.append({**img, "id": new_id})
            paths.append(os.path.join(image_dir, img["file_name"]))
        for ann in data["annotations"]:
            annotations.append({
                **ann, "id": len(annotations) + 1, "image_id": remap[ann["image_id"]],
                "category_id": int(ann["category_id"]), "iscrowd": int(ann.get("iscrowd", 0)),
            })
        for cat in data["categories"]:
            try:
                categories.setdefault(int(cat["id"]), cat)
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{where}[{k}].json_file: every category needs an integer 'id', got "
                                f"{json.dumps(cat)[:80]}") from None
    return {"images": images, "annotations": annotations, "categories": list(categories.values())}, paths


class CocoDetection(torch.utils.data.Dataset):
    """Item ``i`` -> ``(image, target)`` after ``transforms``; target holds ``boxes``,
    ``labels Long[n]``, ``image_id``, ``orig_size Long[2]`` (h, w), ``size``, ``area``, ``iscrowd``.

    The data policy (:mod:`dino.data.policy`) is applied to each source when the dataset is
    built: ``policy`` holds what it did per source, and a refusal raises DataError (with
    ``strict``, any finding does)."""

    def __init__(self, sources: list[DataSource], transforms: Callable | None, where: str, strict: bool = False):
        if not sources:
            raise DataError(f"{where} is empty: list at least one {{image_dir, json_file}}")
        parts = []
        self.policy: list[tuple[str, PolicyReport]] = []
        refusals = []
        for i, s in enumerate(sources):
            here = f"{where}[{i}]"
            corrected, report = apply_data_policy(read_coco_json(s, here), s, here, strict)
            self.policy.append((here, report))
            if report.refused:
                refusals.append(refusal_text(report, here))
            parts.append((corrected, s.image_dir))
        if refusals:
            raise DataError("\n".join(refusals))
        merged, self.paths = _merge(parts, where)
        self.where = where
        self.coco = coco_index(merged)
        self.ids = [img["id"] for img in merged["images"]]
        self.sizes = [(img["width"], img["height"]) for img in merged["images"]]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def max_boxes(self) -> int:
        """The most boxes (crowd boxes aside, as in ``target``) an image has. No
        augmentation adds a box, so no training image has more; it sizes the denoising
        slots of the decoder's CUDA graphs (``train.cuda_graphs_decoder``)."""
        counts = collections.Counter(a["image_id"] for a in self.coco.dataset["annotations"] if not a.get("iscrowd", 0))
        return max(counts.values(), default=0)

    def max_category_id(self) -> tuple[int, str]:
        """The largest category id in categories or annotations, and where it was seen."""
        best, origin = -1, ""
        for cat in self.coco.dataset["categories"]:
            if int(cat["id"]) > best:
                best, origin = int(cat["id"]), f"category {cat.get('name', '?')!r}"
        for ann in self.coco.dataset["annotations"]:
            if int(ann["category_id"]) > best:
                best, origin = int(ann["category_id"]), f"annotation id {ann['id']}"
        return best, origin

    def target(self, index: int, width: int, height: int) -> dict[str, torch.Tensor]:
        """The boxes of image ``index`` (xyxy pixels), already corrected by the policy; the
        loaded image must have the size the policy placed them in."""
        if (width, height) != tuple(self.sizes[index]):
            raise DataError(f"{self.paths[index]} is {width}x{height} now but was {self.sizes[index][0]}x"
                            f"{self.sizes[index][1]} when the dataset was read: the file changed during training")
        image_id = self.ids[index]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        area = torch.tensor([a["area"] for a in anns], dtype=torch.float32)
        return {
            "boxes": boxes, "labels": labels, "area": area,
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "image_id": torch.tensor(image_id), "orig_size": torch.tensor([height, width]),
            "size": torch.tensor([height, width]),
        }

    def __getitem__(self, index: int):
        image = load_image(self.paths[index])
        target = self.target(index, image.width, image.height)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def where_images(where: str) -> str:
    return f"{where} image_dir"


def coco_index(data: dict[str, Any]) -> COCO:
    """A pycocotools index over an in-memory COCO dict (its chatter silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
