"""Boxes, class names and scores drawn onto an image (PIL only), as ``dino inference`` writes them.

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
                    colors: dict[str, tuple[int, int, int]], outline_width: int = 3) -> Image.Image:
    """A copy of ``image`` with ``detections`` (COCO result dicts: ``bbox`` x, y, w, h in this
    image's pixels, ``category_id``, ``score``) drawn as outlined boxes with a
    "name score" label on a filled tab above each (inside the box when at the top edge)."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = _font(out.height)
    for det in sorted(detections, key=lambda d: d["score"]):
        x, y, w, h = det["bbox"]
        cat = int(det["category_id"])
        name = names.get(cat, f"class_{cat}")
        color = class_color(cat, name, colors)
        draw.rectangle([x, y, x + w, y + h], outline=color, width=outline_width)
        text = f"{name} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 4 if y - th - 4 >= 0 else y
        draw.rectangle([x, ty, x + tw + 4, ty + th + 4], fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((x + 2 - left, ty + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    return out
