"""Read a COCO detection file into typed records, reporting every format problem found.

Stricter than pycocotools on purpose: it names the entry that would later crash the
trainer (a string id, an annotation of an unknown image, a category missing from
``categories``) instead of failing on the first one with a KeyError.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.datasets.findings import Finding, FindingGroup, Severity


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: float | None  # None when missing or not a positive number (the data policy then uses the file's)
    height: float | None


@dataclass(frozen=True)
class CocoAnnotation:
    index: int  # position in the "annotations" list, for messages
    id: Any
    image_id: int
    category_id: int
    bbox: Any  # as written; checked by preflight ([x, y, w, h] in pixels)


@dataclass
class CocoSet:
    path: Path
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    category_ids: list[int]
    images_by_id: dict[int, CocoImage] = field(default_factory=dict)

    def max_category_id(self) -> tuple[int, str] | None:
        """The largest category id in use and where it was seen (an annotation if any uses it)."""
        best: tuple[int, str] | None = None
        for ann in self.annotations:
            if best is None or ann.category_id > best[0]:
                best = (ann.category_id, f"annotations[{ann.index}]")
        for cid in self.category_ids:
            if best is None or cid > best[0]:
                best = (cid, "the 'categories' list")
        return best


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def read_coco(path: Path, split: str) -> tuple[CocoSet | None, list[Finding]]:
    """Parse ``path``; None when it cannot be used at all (missing, not JSON, no lists)."""
    where = f"{split} {path}"

    def fatal(what: str, fix: str) -> tuple[None, list[Finding]]:
        return None, [Finding(Severity.ERROR, what, where, fix, code="annotations_unreadable")]

    if not path.is_file():
        return fatal("the annotations file does not exist", "stage the split again, or point the source at the folder holding annotations.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return fatal(f"annotations are not UTF-8 text ({exc.reason})", "export the annotations as COCO JSON")
    except json.JSONDecodeError as exc:
        return fatal(f"annotations are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", "fix or re-export the COCO JSON file")
    if not isinstance(data, dict):
        return fatal(f"annotations hold a JSON {type(data).__name__}, not a COCO object", "export the annotations in COCO detection format")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return fatal(
            f"annotations lack the COCO list(s) {', '.join(repr(k) for k in missing)}",
            "a COCO detection file needs top-level lists 'images', 'annotations' and 'categories'",
        )

    def group(code: str, severity: Severity, what: str, fix: str) -> FindingGroup:
        return FindingGroup(code, severity, what, where, fix)

    bad_image = group("coco_bad_image", Severity.ERROR, "image entries are malformed", "each image needs an integer 'id' and a string 'file_name'")
    dup_image = group("coco_duplicate_image_id", Severity.ERROR, "image ids appear more than once", "give every image a unique integer 'id'")
    bad_cat = group("coco_bad_category", Severity.ERROR, "category entries are malformed", "each category needs a non-negative integer 'id'")
    bad_ann = group(
        "coco_bad_annotation",
        Severity.ERROR,
        "annotations are malformed",
        "each annotation needs integer 'image_id' and 'category_id' and a 'bbox' [x, y, width, height]",
    )
    unknown_image = group("coco_unknown_image", Severity.ERROR, "annotations refer to image ids not in 'images'", "remove them or add the images")
    unknown_cat = group(
        "coco_unknown_category",
        Severity.ERROR,
        "annotations use category ids not listed in 'categories'",
        "add the categories to 'categories' or fix the annotations' category_id",
    )

    images: list[CocoImage] = []
    by_id: dict[int, CocoImage] = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("file_name"), str) or not entry.get("file_name"):
            bad_image.add(f"images[{i}] = {json.dumps(entry)[:80]}")
            continue
        img = CocoImage(entry["id"], entry["file_name"], _positive(entry.get("width")), _positive(entry.get("height")))
        if img.id in by_id:
            dup_image.add(f"images[{i}] id {img.id}")
            continue
        images.append(img)
        by_id[img.id] = img

    category_ids: list[int] = []
    for i, entry in enumerate(data["categories"]):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or entry["id"] < 0:
            bad_cat.add(f"categories[{i}] = {json.dumps(entry)[:80]}")
            continue
        category_ids.append(entry["id"])
    known_cats = set(category_ids)

    annotations: list[CocoAnnotation] = []
    for i, entry in enumerate(data["annotations"]):
        if (
            not isinstance(entry, dict)
            or not _is_int(entry.get("image_id"))
            or not _is_int(entry.get("category_id"))
            or entry["category_id"] < 0
            or "bbox" not in entry
        ):
            bad_ann.add(f"annotations[{i}] = {json.dumps(entry)[:80]}")
            continue
        if entry["image_id"] not in by_id:
            unknown_image.add(f"annotations[{i}] image_id {entry['image_id']}")
            continue
        if entry["category_id"] not in known_cats:
            unknown_cat.add(f"annotations[{i}] category_id {entry['category_id']}")
        annotations.append(CocoAnnotation(i, entry.get("id"), entry["image_id"], entry["category_id"], entry["bbox"]))

    findings = [
        f
        for g in (bad_image, dup_image, bad_cat, bad_ann, unknown_image, unknown_cat)
        if (f := g.finding()) is not None
    ]
    return CocoSet(path, images, annotations, category_ids, by_id), findings
