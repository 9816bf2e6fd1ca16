"""Joint image + target transforms (DETR / TAO augmentation).

Each transform takes and returns ``(image, target)``. Until :class:`Normalize`, the image
is a PIL image and ``target["boxes"]`` is ``Float[n, 4]`` xyxy in pixels; ``Normalize``
turns the image into ``Float[3, H, W]`` and the boxes into cxcywh divided by the image
size, which is what the model and criterion expect.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from dino.config.spec import AugmentationConfig


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _keep(target: dict, keep: torch.Tensor) -> dict:
    """Select the per-box fields of ``target`` by the bool mask ``keep [n]``."""
    for key in ("boxes", "labels", "area", "iscrowd"):
        if key in target:
            target[key] = target[key][keep]
    return target


def hflip(image: Image.Image, target: dict) -> tuple[Image.Image, dict]:
    w = image.width
    target = dict(target)
    boxes = target["boxes"]
    target["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=-1)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), target


def crop(image: Image.Image, target: dict, top: int, left: int, height: int, width: int) -> tuple[Image.Image, dict]:
    """Crop and clip boxes; boxes left with no area are dropped."""
    target = dict(target)
    boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    target["boxes"] = boxes
    target["area"] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    target["size"] = torch.tensor([height, width])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return image.crop((left, top, left + width, top + height)), _keep(target, keep)


def resized_hw(w: int, h: int, size: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) with the shorter side ``size`` and the longer side at most ``max_size``."""
    if max_size is not None:
        short, long = min(w, h), max(w, h)
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize(image: Image.Image, target: dict, size: int, max_size: int | None) -> tuple[Image.Image, dict]:
    new_h, new_w = resized_hw(image.width, image.height, size, max_size)
    sx, sy = new_w / image.width, new_h / image.height
    target = dict(target)
    target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy])
    if "area" in target:
        target["area"] = target["area"] * (sx * sy)
    target["size"] = torch.tensor([new_h, new_w])
    # PIL's bilinear filter (antialiased when shrinking), as torchvision's resize of a PIL image
    return image.resize((new_w, new_h), Image.Resampling.BILINEAR), target


class Compose:
    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        return hflip(image, target) if random.random() < self.p else (image, target)


class RandomResize:
    """Shorter side to a random choice of ``sizes``, longer side capped at ``max_size``."""

    def __init__(self, sizes: list[int], max_size: int | None = None):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, image, target):
        return resize(image, target, random.choice(self.sizes), self.max_size)


class RandomSizeCrop:
    """A crop of random size in [min_size, max_size] per side (clamped to the image)."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target):
        w = random.randint(min(self.min_size, image.width), min(image.width, self.max_size))
        h = random.randint(min(self.min_size, image.height), min(image.height, self.max_size))
        top = random.randint(0, image.height - h)
        left = random.randint(0, image.width - w)
        return crop(image, target, top, left, h, w)


class RandomSelect:
    """``first`` with probability ``p`` else ``second``."""

    def __init__(self, first, second, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, image, target):
        return self.first(image, target) if random.random() < self.p else self.second(image, target)


class Normalize:
    """PIL -> ``Float[3, H, W]`` normalised; boxes -> cxcywh in [0, 1] of the current size."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean, self.std = list(mean), list(std)
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._std = np.asarray(self.std, dtype=np.float32)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL ``[H, W, 3]`` uint8 -> ``Float[3, H, W]``: ``(x / 255 - mean) / std`` per channel
        (in float32, step by step, so the numbers are torchvision's ``to_tensor`` + ``normalize``)."""
        pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.float32) / np.float32(255)
        return torch.from_numpy(np.ascontiguousarray(((pixels - self._mean) / self._std).transpose(2, 0, 1)))

    def __call__(self, image, target):
        tensor = self.to_tensor(image)
        target = dict(target)
        h, w = tensor.shape[-2:]
        target["boxes"] = box_xyxy_to_cxcywh(target["boxes"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
        return tensor, target


def train_transforms(aug: AugmentationConfig) -> Compose:
    """TAO's DINO training pipeline: flip, then multi-scale resize or resize-crop-resize."""
    return Compose([
        RandomHorizontalFlip(aug.horizontal_flip_prob),
        RandomSelect(
            RandomResize(aug.scales, max_size=aug.random_resize_max_size),
            Compose([
                RandomResize(aug.train_random_resize),
                RandomSizeCrop(aug.train_random_crop_min, aug.train_random_crop_max),
                RandomResize(aug.scales, max_size=aug.random_resize_max_size),
            ]),
        ),
        Normalize(aug.input_mean, aug.input_std),
    ])


def val_transforms(aug: AugmentationConfig) -> Compose:
    return Compose([
        RandomResize([aug.test_random_resize], max_size=aug.random_resize_max_size),
        Normalize(aug.input_mean, aug.input_std),
    ])
