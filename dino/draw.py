"""Boxes, class names and scores drawn onto an image (PIL only), as ``dino inference`` writes them,
and ground truth beside detections (:func:`compare_pictures`, the pictures of the study report).

A class keeps one colour across images: ``inference.color_map`` by class name when it
names the class, else a fixed palette by category id. Lower scores are drawn first, so
the most confident box of a cluster ends on top.
"""

from __future__ import annotations

from PIL import Image, ImageColor, ImageDraw, ImageFont

# Distinct, saturated colours that read on photographs (category id modulo its length).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000")


def parse_colors(color_map: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """``{class name: (r, g, b)}``; ValueError naming the first colour PIL does not know."""
    out = {}
    for name, color in color_map.items():
        try:
            out[name] = ImageColor.getrgb(color)[:3]
        except ValueError:
            raise ValueError(f"inference.color_map[{name!r}] = {color!r} is not a colour: use a name (red) "
                             "or #rrggbb") from None
    return out


def class_color(category_id: int, name: str, colors: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    return colors.get(name) or ImageColor.getrgb(PALETTE[category_id % len(PALETTE)])[:3]


def _font(image_height: int) -> ImageFont.ImageFont:
    size = max(10, round(image_height / 40))
    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def draw_detections(image: Image.Image, detections: list[dict], names: dict[int, str],
                    colors: dict[str, tuple[int, int, int]], outline_width: int = 3,
                    font: ImageFont.ImageFont | None = None) -> Image.Image:
    """A copy of ``image`` with ``detections`` (COCO result dicts: ``bbox`` x, y, w, h in this
    image's pixels, ``category_id``, ``score``) drawn as outlined boxes with a
    "name score" label on a filled tab above each (inside the box when at the top edge)."""
    boxes = []
    for det in sorted(detections, key=lambda d: d["score"]):
        cat = int(det["category_id"])
        name = names.get(cat, f"class_{cat}")
        boxes.append((det["bbox"], class_color(cat, name, colors), f"{name} {det['score']:.2f}"))
    return _draw_boxes(image, boxes, outline_width, font)


def draw_ground_truth(image: Image.Image, boxes: list[dict], names: dict[int, str],
                      colors: dict[str, tuple[int, int, int]], outline_width: int = 3,
                      font: ImageFont.ImageFont | None = None) -> Image.Image:
    """A copy of ``image`` with annotation boxes (COCO ``bbox`` x, y, w, h and ``category_id``)
    drawn as :func:`draw_detections` draws detections, labelled with the class name alone."""
    drawn = []
    for box in boxes:
        cat = int(box["category_id"])
        name = names.get(cat, f"class_{cat}")
        drawn.append((box["bbox"], class_color(cat, name, colors), name))
    return _draw_boxes(image, drawn, outline_width, font)


def _draw_boxes(image: Image.Image, boxes: list[tuple[list[float], tuple[int, int, int], str]],
                outline_width: int, font: ImageFont.ImageFont | None = None) -> Image.Image:
    """``boxes``: (x, y, w, h), colour, label; drawn in order (the last ends on top)."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = font or _font(out.height)
    for (x, y, w, h), color, text in boxes:
        draw.rectangle([x, y, x + w, y + h], outline=color, width=outline_width)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 4 if y - th - 4 >= 0 else y
        draw.rectangle([x, ty, x + tw + 4, ty + th + 4], fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((x + 2 - left, ty + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    return out


def _scaled(boxes: list[dict], factor: float) -> list[dict]:
    return [{**b, "bbox": [v * factor for v in b["bbox"]]} for b in boxes]


def compare_pictures(image: Image.Image, ground_truth: list[dict], detections: list[dict], names: dict[int, str],
                     colors: dict[str, tuple[int, int, int]], captions: tuple[str, str],
                     min_side: int = 320, gap: int = 12) -> Image.Image:
    """Ground truth (left) beside the detections (right) on the same image, each under its
    caption. An image smaller than ``min_side`` is enlarged first (boxes with it), so the
    labels of a 64-pixel validation image stay readable. Boxes are in ``image``'s pixels."""
    factor = max(1.0, min_side / max(1, min(image.size)))
    base = image.convert("RGB")
    if factor > 1.0:
        base = base.resize((round(base.width * factor), round(base.height * factor)), Image.Resampling.BICUBIC)
    width = max(2, min(4, round(factor)))
    labels = _font(max(base.height, 480))  # 12 px at least
    left = draw_ground_truth(base, _scaled(ground_truth, factor), names, colors, width, labels)
    right = draw_detections(base, _scaled(detections, factor), names, colors, width, labels)
    font = _font(max(base.height, 600))  # captions: 15 px at least
    probe = ImageDraw.Draw(left)
    line = max(probe.textbbox((0, 0), c, font=font)[3] for c in captions) + 10
    canvas = Image.new("RGB", (2 * base.width + 3 * gap, base.height + line + 2 * gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (panel, caption) in enumerate(zip((left, right), captions)):
        x = gap + k * (base.width + gap)
        draw.text((x, gap), caption, fill=(20, 20, 20), font=font)
        canvas.paste(panel, (x, gap + line))
    return canvas
