"""COCO detection data: one or more COCO sources merged into one dataset.

Category ids are used directly as class indices (TAO's convention), so training needs
``num_classes > max(category_id)``. Crowd boxes never reach the model (COCOeval still
sees them in the ground truth); images without boxes are kept; any PIL mode is
converted to RGB.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from dino.config.spec import DataSource


class DataError(ValueError):
    """The dataset is missing, unreadable or inconsistent with the spec; says where and the fix."""


def load_image(path: str) -> Image.Image:
    """An RGB PIL image from any mode (L, RGBA, P, CMYK, 16-bit, ...)."""
    try:
        with Image.open(path) as img:
            img.load()
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


def _merge(parts: list[tuple[dict[str, Any], str]], where: str) -> tuple[dict[str, Any], list[str]]:
    """One COCO dict from several sources and each image's file path. A single source keeps
    its image ids (results then match the user's file); several get new unique ones.
    Annotation ids are always renumbered 1..n; missing ``area`` / ``iscrowd`` are filled."""
    images, annotations, categories, paths = [], [], {}, []
    for k, (data, image_dir) in enumerate(parts):
        remap = {}
        for img in data["images"]:
            new_id = img["id"] if len(parts) == 1 else len(images) + 1
            if new_id in remap.values() or img["id"] in remap:
                raise DataError(f"{where}[{k}].json_file: image id {img['id']} appears twice")
            remap[img["id"]] = new_id
            images.append({**img, "id": new_id})
            paths.append(os.path.join(image_dir, img["file_name"]))
        for ann in data["annotations"]:
            if ann.get("image_id") not in remap:
                continue
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                int(ann["category_id"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{where}[{k}].json_file: annotation {ann.get('id', '?')} needs a 'bbox' "
                                f"[x, y, w, h] and a 'category_id'") from None
            annotations.append({
                **ann, "id": len(annotations) + 1, "image_id": remap[ann["image_id"]], "bbox": [x, y, w, h],
                "area": float(ann.get("area", w * h)), "iscrowd": int(ann.get("iscrowd", 0)),
            })
        for cat in data["categories"]:
            categories.setdefault(int(cat["id"]), cat)
    return {"images": images, "annotations": annotations, "categories": list(categories.values())}, paths


class CocoDetection(torch.utils.data.Dataset):
    """Item ``i`` -> ``(image, target)`` after ``transforms``; target holds ``boxes``,
    ``labels Long[n]``, ``image_id``, ``orig_size Long[2]`` (h, w), ``size``, ``area``, ``iscrowd``."""

    def __init__(self, sources: list[DataSource], transforms: Callable | None, where: str):
        if not sources:
            raise DataError(f"{where} is empty: list at least one {{image_dir, json_file}}")
        parts = [(read_coco_json(s, f"{where}[{i}]"), s.image_dir) for i, s in enumerate(sources)]
        merged, self.paths = _merge(parts, where)
        self.where = where
        self.coco = coco_index(merged)
        self.ids = [img["id"] for img in merged["images"]]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def check_files(self) -> None:
        """Every image file exists (decode errors surface when an image is read)."""
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DataError(f"{where_images(self.where)}: {len(missing)} of {len(self.paths)} image files "
                            f"listed in the annotations are missing: {shown}")

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
        image_id = self.ids[index]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        area = torch.tensor([a["area"] for a in anns], dtype=torch.float32)
        return {
            "boxes": boxes[keep], "labels": labels[keep], "area": area[keep],
            "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.int64),
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
