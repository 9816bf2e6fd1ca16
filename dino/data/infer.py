"""The images of ``dino inference`` (``dataset.infer_data_sources``) and their class names.

As TAO: every image file directly inside each ``image_dir`` (sorted by name; ids 1..N in
that order), and ``classmap`` a text file whose line i names category id i + 1. Ours:
``json_file``, a COCO file listing the images instead, so the predictions carry that
file's image ids and can be scored against it (and its category names are used when no
classmap is given). Everything here is checked before the model is built.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from PIL import Image

from dino.config.spec import AugmentationConfig, DataSource, InferDataSource
from dino.data.coco import DataError, load_image, read_coco_json
from dino.data.transforms import val_transforms

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WHERE = "dataset.infer_data_sources"


@dataclasses.dataclass(frozen=True)
class InferImage:
    image_id: int
    path: str  # the file that is read
    file_name: str  # relative to its image_dir (COCO's file_name)
    source: int  # index into image_dir


@dataclasses.dataclass(frozen=True)
class InferSet:
    images: list[InferImage]
    names: dict[int, str]  # category id -> name; may be empty (then "class_<id>")
    unlisted: int  # image files in image_dir that json_file does not list (skipped)


def read_classmap(path: str, where: str = f"{WHERE}.classmap") -> dict[int, str]:
    """``{i + 1: line i}``; trailing blank lines are dropped, a blank line before a name
    is an error (it would shift every later id)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except FileNotFoundError:
        raise DataError(f"{where} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} cannot be read: {path}: {exc}") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{where} {path} lists no class names: write one name per line (line 1 = category id 1)")
    blank = [i + 1 for i, name in enumerate(lines) if not name]
    if blank:
        raise DataError(f"{where} {path}: line {blank[0]} is blank; line i names category id i, so every line "
                        "up to the last name needs one")
    return {i + 1: name for i, name in enumerate(lines)}


def _folder_images(image_dir: str, k: int) -> list[tuple[str, str]]:
    """(path, file name) of the image files directly inside ``image_dir``, sorted by name."""
    if not os.path.isdir(image_dir):
        raise DataError(f"{WHERE}.image_dir[{k}] not found or not a folder: {image_dir}")
    names = sorted(n for n in os.listdir(image_dir)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(image_dir, n)))
    return [(os.path.join(image_dir, n), n) for n in names]


def list_images(src: InferDataSource) -> InferSet:
    """The images to run on and the class names, checked: folders exist, at least one image,
    with ``json_file`` every listed file exists."""
    dirs = list(src.image_dir)
    if not dirs or not any(dirs):
        raise DataError(f"{WHERE}.image_dir is empty: set it to a list of image folders")
    for k, d in enumerate(dirs):
        if not d:
            raise DataError(f"{WHERE}.image_dir[{k}] is empty: give a folder or drop the entry")
    names = read_classmap(src.classmap) if src.classmap else {}
    if not src.json_file:
        found = [(path, name, k) for k, d in enumerate(dirs) for path, name in _folder_images(d, k)]
        if not found:
            raise DataError(f"{WHERE}.image_dir: no image files ({', '.join(IMAGE_EXTENSIONS)}) directly inside "
                            f"{', '.join(dirs)}")
        images = [InferImage(i + 1, path, name, k) for i, (path, name, k) in enumerate(found)]
        return InferSet(images, names, 0)
    if len(dirs) != 1:
        raise DataError(f"{WHERE}.json_file names files relative to one folder, but image_dir lists {len(dirs)}; "
                        "give one image_dir with json_file")
    data = read_coco_json(DataSource(image_dir=dirs[0], json_file=src.json_file), WHERE)
    if not data["images"]:
        raise DataError(f"{WHERE}.json_file {src.json_file} lists no images")
    images, seen = [], set()
    for img in data["images"]:
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{WHERE}.json_file {src.json_file}: every image needs an integer 'id' and a "
                            f"'file_name' (got {img!r})") from None
        if image_id in seen:
            raise DataError(f"{WHERE}.json_file {src.json_file}: image id {image_id} appears twice")
        seen.add(image_id)
        images.append(InferImage(image_id, os.path.join(dirs[0], file_name), file_name, 0))
    missing = [im.path for im in images if not os.path.isfile(im.path)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{WHERE}.image_dir: {len(missing)} of {len(images)} image files listed in json_file are "
                        f"missing: {shown}")
    if not names:
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    listed = {os.path.normpath(im.path) for im in images}
    unlisted = sum(os.path.normpath(p) not in listed for p, _ in _folder_images(dirs[0], 0))
    return InferSet(images, names, unlisted)


def check_decodable(images: list[InferImage]) -> None:
    """Every file opens as an image (header only, no decoding): a bad file is reported
    before the model is built, not half-way through the run."""
    bad = []
    for im in images:
        try:
            with Image.open(im.path) as img:
                img.size  # noqa: B018 - parsing the header is the check
        except (OSError, ValueError) as exc:
            bad.append(f"{im.path} ({exc})")
    if bad:
        shown = "; ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DataError(f"{WHERE}: {len(bad)} of {len(images)} files are not readable images: {shown}")


class InferenceDataset(torch.utils.data.Dataset):
    """Item ``i`` -> ``(image Float[3, h, w], target)``: resized and normalised as validation
    images are (so inference and ``dino evaluate`` see the same pixels); ``target`` holds
    ``image_id``, ``orig_size`` (h, w) and ``size``, and no boxes."""

    def __init__(self, images: list[InferImage], aug: AugmentationConfig):
        self.images = images
        self.transforms = val_transforms(aug)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        im = self.images[index]
        image = load_image(im.path)
        size = torch.tensor([image.height, image.width])
        target = {"boxes": torch.zeros((0, 4)), "image_id": torch.tensor(im.image_id), "orig_size": size, "size": size}
        image, target = self.transforms(image, target)
        del target["boxes"]
        return image, target
