"""``compare_pictures``: ground truth on the left, detections on the right, both enlarged
with their image so a 64-pixel validation image stays readable."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dino.draw import class_color, compare_pictures

NAMES = {1: "circle", 2: "square"}


def test_ground_truth_beside_detections_at_the_enlarged_positions():
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    gt = [{"bbox": [8, 20, 16, 16], "category_id": 1}]
    dets = [{"bbox": [36, 16, 20, 24], "category_id": 2, "score": 0.9}]
    out = compare_pictures(image, gt, dets, NAMES, {}, ("ground truth", "detections"), min_side=320, gap=12)
    factor = 320 / 48  # the shorter side is brought to 320
    panel_w, panel_h = round(64 * factor), round(48 * factor)
    assert out.width == 2 * panel_w + 3 * 12
    pixels = np.asarray(out)
    top = out.height - 12 - panel_h  # the panels sit under the captions
    gt_color, det_color = class_color(1, "circle", {}), class_color(2, "square", {})

    def at(panel: int, x: float, y: float) -> tuple[int, ...]:
        left = 12 + panel * (panel_w + 12)
        return tuple(int(v) for v in pixels[top + round(y * factor), left + round(x * factor)])

    # left edges at mid-height of each box (the label tab sits above the top edge)
    assert at(0, 8, 28) == gt_color and at(1, 36, 28) == det_color
    # each panel shows only its own boxes; elsewhere the (enlarged) image itself
    assert at(1, 8, 28) == (128, 128, 128) and at(0, 36, 28) == (128, 128, 128)
    assert at(0, 50, 5) == at(1, 20, 5) == (128, 128, 128)
    # the captions are drawn above the panels
    caption = pixels[:top, :panel_w]
    assert (caption < 100).any() and (pixels[:top, panel_w + 24:] < 100).any()


def test_large_images_are_not_enlarged():
    image = Image.new("RGB", (640, 400), (10, 10, 10))
    out = compare_pictures(image, [], [], NAMES, {}, ("a", "b"), min_side=320, gap=10)
    assert out.width == 2 * 640 + 30
