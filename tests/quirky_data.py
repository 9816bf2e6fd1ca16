"""A COCO split with what real exports contain, and the boxes a person sees in it.

Every image shows solid rectangles (category 1 red, 2 blue) on a grey background, so the
truth is known from the pixels: ``truth[file_name]`` holds ``(category, [x0, y0, x1, y1])``
in pixels of the image *as displayed* (EXIF orientation applied). The annotations file
holds the quirks of real exports on top of that truth:

- ``zero.png``: an extra box ``[x, y, 0, 0]`` (dropped by the policy);
- ``border.png``: a box running 10 px past the right border (clipped to the object);
- ``exif6.jpg``: a JPEG stored on its side with EXIF orientation 6 (displayed 64 wide,
  80 tall), its box drawn on the displayed image; ``exif3.jpg``: stored upside down;
- ``half.png``: annotated at 128x128 (boxes too) while the file is 64x64 (rescaled);
- ``odd.png`` (only with ``inconsistent=True``): a 64x48 file annotated at 128x128,
  which no rescale fixes (refused).

Every image's shorter side is 64 and no side exceeds 96, so with ``scales: [64]``, no
flip and a crop larger than the images, the targets the model gets are the truth
exactly (``truth_after_transforms``). Image ids are 100 + their index, annotation ids
1000 + theirs (unlike the indices, so a mix-up shows). A uniquely named module: test folders have no
``__init__.py``; it is imported by the trainer, preflight and study tests.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from PIL import Image, ImageOps

BACKGROUND = (128, 128, 128)
COLORS = {1: (230, 20, 20), 2: (20, 20, 230)}
NUM_CLASSES = 3  # category ids 1 and 2 are class indices

# augmentation under which the model's targets equal the truth (see the module docstring)
IDENTITY_AUGMENTATION = {
    "scales": [64], "train_random_resize": [64], "random_resize_max_size": 96, "test_random_resize": 64,
    "train_random_crop_min": 1024, "train_random_crop_max": 1024, "horizontal_flip_prob": 0.0,
}  # fmt: skip


@dataclasses.dataclass
class QuirkySplit:
    root: Path
    image_dir: Path
    json_file: Path
    ids: dict[str, int]  # file name -> image id
    truth: dict[str, list[tuple[int, list[float]]]]  # file name -> (category, xyxy as displayed)
    annotation_ids: dict[str, list[int]]  # file name -> its annotation ids, in order

    def truth_by_id(self) -> dict[int, list[tuple[int, list[float]]]]:
        return {self.ids[name]: boxes for name, boxes in self.truth.items()}


def _paint(size: tuple[int, int], boxes: list[tuple[int, list[float]]]) -> Image.Image:
    img = Image.new("RGB", size, BACKGROUND)
    for cat, (x0, y0, x1, y1) in boxes:
        img.paste(COLORS[cat], (int(x0), int(y0), int(x1), int(y1)))
    return img


def _xywh(box: list[float], scale: float = 1.0) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale]


def write_quirky_split(root: Path, n_plain: int = 6, seed: int = 0, inconsistent: bool = False) -> QuirkySplit:
    """Write ``root/images/`` + ``root/annotations.json`` (see the module docstring)."""
    rng = random.Random(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    anns: list[dict] = []
    split = QuirkySplit(root, image_dir, root / "annotations.json", {}, {}, {})

    def add(name: str, json_size: tuple[float, float], boxes: list[tuple[int, list[float]]],
            written: list[tuple[int, list[float]]]) -> None:
        image_id = 100 + len(images)
        split.ids[name] = image_id
        split.truth[name] = boxes
        images.append({"id": image_id, "file_name": name, "width": json_size[0], "height": json_size[1]})
        split.annotation_ids[name] = []
        for cat, bbox in written:
            ann_id = 1000 + len(anns)
            split.annotation_ids[name].append(ann_id)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
                         "area": max(bbox[2], 0) * max(bbox[3], 0), "iscrowd": 0})

    def random_box(w: int, h: int) -> list[float]:
        bw, bh = rng.randint(16, 32), rng.randint(16, 32)
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        return [float(x), float(y), float(x + bw), float(y + bh)]

    for i in range(n_plain):  # clean images: what makes the set trainable at all
        name = f"plain{i}.png"
        boxes = [(1 + i % 2, random_box(64, 64))]
        _paint((64, 64), boxes).save(image_dir / name)
        add(name, (64, 64), boxes, [(c, _xywh(b)) for c, b in boxes])

    # a zero-area box beside a real one (the public dataset's [181, 329, 0, 0])
    boxes = [(1, [8.0, 8.0, 40.0, 36.0])]
    _paint((64, 64), boxes).save(image_dir / "zero.png")
    add("zero.png", (64, 64), boxes, [(1, _xywh(boxes[0][1])), (2, [50.0, 50.0, 0.0, 0.0])])

    # an object touching the right border, annotated 10 px past it
    boxes = [(2, [40.0, 10.0, 64.0, 30.0])]
    _paint((64, 64), boxes).save(image_dir / "border.png")
    add("border.png", (64, 64), boxes, [(2, [40.0, 10.0, 34.0, 20.0])])

    # EXIF 6: displayed 64 wide x 80 tall; stored on its side (80 x 64); boxes on the displayed image
    boxes = [(1, [6.0, 40.0, 30.0, 72.0])]
    shown = _paint((64, 80), boxes)
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back clockwise
    _save_jpeg(stored, image_dir / "exif6.jpg", 6)
    add("exif6.jpg", (64, 80), boxes, [(1, _xywh(boxes[0][1]))])

    # EXIF 3: stored upside down
    boxes = [(2, [4.0, 4.0, 28.0, 20.0])]
    _save_jpeg(_paint((64, 64), boxes).transpose(Image.Transpose.ROTATE_180), image_dir / "exif3.jpg", 3)
    add("exif3.jpg", (64, 64), boxes, [(2, _xywh(boxes[0][1]))])

    # annotated at 128x128 (size and boxes), the file saved at half that
    boxes = [(1, [20.0, 24.0, 52.0, 50.0])]
    _paint((64, 64), boxes).save(image_dir / "half.png")
    add("half.png", (128, 128), boxes, [(1, _xywh(boxes[0][1], 2.0))])

    if inconsistent:  # 64x48 against 128x128: x0.5 but y0.375
        boxes = [(2, [10.0, 10.0, 30.0, 30.0])]
        _paint((64, 48), boxes).save(image_dir / "odd.png")
        add("odd.png", (128, 128), boxes, [(2, _xywh(boxes[0][1], 2.0))])

    categories = [{"id": c, "name": n} for c, n in ((1, "red"), (2, "blue"))]
    split.json_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return split


def _save_jpeg(img: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", quality=95, exif=exif.tobytes())


def displayed(path: Path) -> Image.Image:
    """The image as a viewer shows it (EXIF orientation applied), independently of our code."""
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def truth_after_transforms(boxes: list[tuple[int, list[float]]], size: tuple[int, int]) -> list[tuple[int, list[float]]]:
    """The truth as the model gets it under IDENTITY_AUGMENTATION: cxcywh over (h, w) = ``size``."""
    h, w = size
    return [(c, [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]) for c, (x0, y0, x1, y1) in boxes]
