"""The data policy: what training does with what real COCO exports contain.

One module, applied by the trainer when it builds a dataset (:mod:`dino.data.coco`) and by
the orchestrator's preflight (``automl dataset check``), so the two cannot disagree. It
imports only PIL (no torch), so the orchestrator can read it without the training stack.

Boxes live in the frame of the image as a person sees it: the file's pixels with its EXIF
orientation applied, as the annotation tools that write COCO files display it. Per image:

- **EXIF orientation** other than 1: applied when loading (counted).
- **Size** in the annotations (``width``/``height``) against the displayed size: equal
  (within half a pixel): nothing to do. Off by one ratio in x and y (within a pixel of
  rounding, e.g. annotated at 128x128 for a 64x64 file): boxes rescaled (counted).
  Anything else, for an image with boxes: refused, since no transform puts its boxes
  where the objects are. Missing, or an image without boxes: the file's size is used.
  A rotating orientation whose *stored* size matches the annotations: refused (the boxes
  may belong to either frame).

Per box, after the rescale: not 4 finite numbers: refused. Zero or negative width or
height: dropped. Past the border by more than :data:`BORDER_TOLERANCE_PX`: clipped;
nothing left inside the image: dropped. Every fix is counted with the first few ids.

``strict``: every fix above becomes a refusal, for users who want their files exact.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence

from PIL import Image, ImageOps

EXIF_ORIENTATION_TAG = 0x0112
# orientations 5-8 transpose the image: the displayed width is the stored height
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
ORIENTATION_NAMES = {
    2: "mirrored", 3: "rotated 180", 4: "flipped vertically", 5: "mirrored and rotated 90 counter-clockwise",
    6: "rotated 90 clockwise", 7: "mirrored and rotated 90 clockwise", 8: "rotated 90 counter-clockwise",
}  # fmt: skip
BORDER_TOLERANCE_PX = 1.0  # overhang up to this is rounding: clipped without a count
SIZE_EQUAL_PX = 0.5  # annotated and real size agree within this
MAX_EXAMPLES = 3
PROBE_THREADS = 8  # header reads are I/O: a few threads hide network-storage latency

STRICT_FIX = ("(refused by the strict data policy: fix the file, or let the policy fix it by turning "
              "strict off: `automl dataset check` without --strict, data.strict in the run config, "
              "dataset.strict_data_policy in the spec)")


# ----------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True)
class ImageProbe:
    """What an image file holds, read from its header: the displayed size (orientation
    applied) and the EXIF orientation (1 when absent or not 1..8)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored, before the orientation is applied."""
        if self.orientation in TRANSPOSING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def orientation_of(img: Image.Image) -> int:
    """The EXIF orientation of an opened image; 1 when missing or not a valid value."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block: the pixels are still usable as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def probe_image(path: str | os.PathLike) -> ImageProbe:
    """Header-only read (no decode); raises OSError / ValueError for a file PIL cannot open."""
    with Image.open(path) as img:
        orientation = orientation_of(img)
        w, h = img.size
    if orientation in TRANSPOSING_ORIENTATIONS:
        w, h = h, w
    return ImageProbe(w, h, orientation)


def apply_orientation(img: Image.Image) -> Image.Image:
    """The image as displayed: its EXIF orientation applied (and the tag reset)."""
    if orientation_of(img) == 1:
        return img
    return ImageOps.exif_transpose(img)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    probes: dict[int, ImageProbe]  # image id -> probe, for every file that could be read
    missing: list[tuple[int, str]]  # (image id, path)
    unreadable: list[tuple[int, str, str]]  # (image id, path, why)


def probe_images(paths: Mapping[int, str], threads: int = PROBE_THREADS,
                 progress: Callable[[int, int], None] | None = None) -> ProbeResult:
    """Probe every image (image id -> path), a few files at a time (about 150 us per JPEG:
    15 s for 100,000). ``progress(done, total)`` is called every few hundred images."""

    def one(item: tuple[int, str]) -> tuple[int, str, ImageProbe | None, str | None]:
        image_id, path = item
        if not os.path.isfile(path):
            return image_id, path, None, None
        try:
            return image_id, path, probe_image(path), None
        except Exception as exc:  # PIL raises many types for bad files
            return image_id, path, None, f"{type(exc).__name__}: {exc}"

    items = list(paths.items())
    results = []
    with ThreadPoolExecutor(max_workers=max(1, threads if len(items) > 16 else 1)) as pool:
        for result in pool.map(one, items):
            results.append(result)
            if progress is not None and (len(results) % 256 == 0 or len(results) == len(items)):
                progress(len(results), len(items))
    out = ProbeResult({}, [], [])
    for image_id, path, probe, why in results:
        if probe is not None:
            out.probes[image_id] = probe
        elif why is None:
            out.missing.append((image_id, path))
        else:
            out.unreadable.append((image_id, path, why))
    return out


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One ``images`` entry as the annotations give it (sizes None when missing or not > 0)."""

    id: int
    file_name: str
    width: float | None = None
    height: float | None = None


@dataclasses.dataclass(frozen=True)
class BoxEntry:
    """One annotation's box as written: ``bbox`` is checked here, nothing is assumed."""

    index: int  # position in the 'annotations' list
    id: Any  # the annotation's 'id' as written (None when absent)
    image_id: int
    bbox: Any

    def label(self) -> str:
        ident = f"id {self.id}, " if self.id is not None else ""
        return f"annotations[{self.index}] ({ident}image id {self.image_id})"


def positive_size(value: Any) -> float | None:
    """A usable width/height from the JSON, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


# ----------------------------------------------------------------------------- outputs


@dataclasses.dataclass(frozen=True)
class Box:
    """A corrected box, ``[x, y, w, h]`` in pixels of the displayed image; ``area_scale``:
    the factor by which rescaling and clipping changed its area (for COCO's ``area``)."""

    x: float
    y: float
    w: float
    h: float
    area_scale: float = 1.0

    def xywh(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]


@dataclasses.dataclass(frozen=True)
class PolicyFinding:
    """One kind of finding with its count and first examples. ``refused``: training
    cannot go on (the dataset is rejected); otherwise the policy fixed it as ``what`` says."""

    code: str
    refused: bool
    count: int
    what: str  # the phrase after the count: "boxes have zero or negative width or height: dropped"
    examples: tuple[str, ...]
    fix: str  # what the user can do about it in the files

    def examples_text(self) -> str:
        more = self.count - len(self.examples)
        return "; ".join(self.examples) + (f"; and {more} more" if more > 0 else "")

    def summary(self) -> str:
        return f"{self.count} {self.what} ({self.examples_text()})"


@dataclasses.dataclass
class PolicyReport:
    """What the policy did to one annotations file."""

    source: str  # the annotations file
    boxes: dict[int, Box]  # annotation index -> its corrected box; dropped or refused: absent
    frames: dict[int, tuple[int, int]]  # image id -> (width, height) the boxes now live in
    findings: list[PolicyFinding]
    total_boxes: int = 0

    @property
    def refused(self) -> list[PolicyFinding]:
        return [f for f in self.findings if f.refused]

    @property
    def fixed(self) -> list[PolicyFinding]:
        return [f for f in self.findings if not f.refused]

    def counts(self) -> dict[str, int]:
        return {f.code: f.count for f in self.findings}


@dataclasses.dataclass
class _Tally:
    code: str
    what: tuple[str, str]  # (for one, for several): "box has ...", "boxes have ..."
    fix: str
    refuses: bool = False
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def finding(self, strict: bool) -> PolicyFinding | None:
        if not self.count:
            return None
        refused = self.refuses or strict
        fix = self.fix if self.refuses or not strict else f"{self.fix} {STRICT_FIX}"
        what = self.what[0] if self.count == 1 else self.what[1]
        return PolicyFinding(self.code, refused, self.count, what, tuple(self.examples), fix)


def _tallies() -> dict[str, _Tally]:
    t = [
        _Tally("box_malformed", ("box is not [x, y, width, height] of 4 finite numbers: refused",
                                 "boxes are not [x, y, width, height] of 4 finite numbers: refused"),
               "fix the 'bbox' of these annotations (COCO boxes are [x, y, width, height] in pixels)", refuses=True),
        _Tally("image_size_inconsistent",
               ("image differs from its size in the annotations by different ratios in x and y: refused, no rescale "
                "puts its boxes on the objects",
                "images differ from their size in the annotations by different ratios in x and y: refused, no rescale "
                "puts their boxes on the objects"),
               "write each image's real width/height into the annotations if its boxes were drawn on this file, "
               "or replace the file with the image the boxes were drawn on", refuses=True),
        _Tally("image_exif_ambiguous",
               ("image carries an EXIF rotation and the annotations give its stored (unrotated) size: refused, it "
                "cannot be told whether its boxes were drawn on the stored or the displayed image",
                "images carry an EXIF rotation and the annotations give their stored (unrotated) size: refused, it "
                "cannot be told whether their boxes were drawn on the stored or the displayed image"),
               "if the boxes were drawn on the image as displayed (what annotation tools show), write the displayed "
               "width/height into the annotations; if on the stored pixels, set the orientation to 1 "
               "(exiftool -Orientation=1 -n FILE)", refuses=True),
        _Tally("image_exif_rotated",
               ("image carries an EXIF orientation: applied, its boxes are read on the image as displayed",
                "images carry an EXIF orientation: applied, their boxes are read on the images as displayed"),
               "save the images with the orientation applied (e.g. PIL's ImageOps.exif_transpose) to silence this"),
        _Tally("image_rescaled",
               ("image is a constant ratio of its size in the annotations: its boxes are rescaled to the file",
                "images are a constant ratio of their size in the annotations: their boxes are rescaled to the files"),
               "write the files' real width/height and boxes into the annotations, or ship the images at the "
               "annotated size"),
        _Tally("image_size_from_file",
               ("image has no usable width/height in the annotations (missing, or different with no boxes to "
                "place): the file's size is used",
                "images have no usable width/height in the annotations (missing, or different with no boxes to "
                "place): the files' sizes are used"),
               "write each image's real width and height into the annotations"),
        _Tally("box_degenerate", ("box has zero or negative width or height: dropped",
                                  "boxes have zero or negative width or height: dropped"),
               "remove these annotations or give them their real size (COCO boxes are [x, y, width, height])"),
        _Tally("box_outside_image", ("box lies entirely outside its image: dropped",
                                     "boxes lie entirely outside their image: dropped"),
               "fix or remove these boxes; check that they are [x, y, width, height] in pixels of this image"),
        _Tally("box_past_border", ("box extends past its image's border: clipped to it",
                                   "boxes extend past their image's border: clipped to it"),
               "clip the boxes to the image in the annotations"),
    ]
    return {x.code: x for x in t}


def _fmt(v: float) -> str:
    return f"{v:g}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------- the policy


@dataclasses.dataclass(frozen=True)
class _Frame:
    width: float | None  # None: unknown (no file, no size in the annotations)
    height: float | None
    sx: float = 1.0
    sy: float = 1.0
    usable: bool = True  # False: the image is refused, its boxes are not placed


def _frame(img: ImageEntry, probe: ImageProbe | None, has_boxes: bool, t: dict[str, _Tally]) -> _Frame:
    label = f"{img.file_name!r} (image id {img.id})"
    if probe is None:  # the file is missing or unreadable (reported by the caller): trust the JSON
        return _Frame(img.width, img.height)
    W, H = probe.width, probe.height
    if probe.orientation != 1:
        sw, sh = probe.stored_size
        turned = f"stored {sw}x{sh}, displayed {W}x{H}" if (sw, sh) != (W, H) else f"{W}x{H}"
        t["image_exif_rotated"].add(f"{label} orientation {probe.orientation} "
                                    f"({ORIENTATION_NAMES.get(probe.orientation, '?')}): {turned}")
    if img.width is None or img.height is None:
        t["image_size_from_file"].add(f"{label} is {W}x{H}, the annotations give no size")
        return _Frame(W, H)
    Wj, Hj = img.width, img.height
    said = f"annotations say {_fmt(Wj)}x{_fmt(Hj)}"
    if abs(W - Wj) <= SIZE_EQUAL_PX and abs(H - Hj) <= SIZE_EQUAL_PX:
        return _Frame(W, H)
    sx, sy = W / Wj, H / Hj
    if _same_ratio(sx, sy, Wj, Hj):
        t["image_rescaled"].add(f"{label} is {W}x{H}, {said}: boxes x{sx:.4g}" + ("" if sx == sy else f" / y{sy:.4g}"))
        return _Frame(W, H, sx, sy)
    if not has_boxes:
        t["image_size_from_file"].add(f"{label} is {W}x{H}, {said} (no boxes)")
        return _Frame(W, H)
    if probe.orientation in TRANSPOSING_ORIENTATIONS and W != H:
        sw, sh = probe.stored_size
        if _same_ratio(sw / Wj, sh / Hj, Wj, Hj):
            t["image_exif_ambiguous"].add(f"{label} stored {sw}x{sh}, displayed {W}x{H} (orientation "
                                          f"{probe.orientation}), {said}")
            return _Frame(W, H, usable=False)
    t["image_size_inconsistent"].add(f"{label} is {W}x{H}, {said} (x{sx:.4g}, y{sy:.4g})")
    return _Frame(W, H, usable=False)


def _same_ratio(sx: float, sy: float, Wj: float, Hj: float) -> bool:
    """One resize factor explains both sides, allowing a pixel of rounding on each."""
    return abs(sx - sy) <= 1.0 / Wj + 1.0 / Hj


def apply_policy(
    images: Sequence[ImageEntry],
    boxes: Iterable[BoxEntry],
    probes: Mapping[int, ImageProbe],
    strict: bool = False,
    source: str = "",
) -> PolicyReport:
    """Correct or refuse every box of one annotations file (see the module docstring).

    ``probes``: image id -> what its file holds; an image without a probe (missing or
    unreadable file, which the caller reports) keeps the size the annotations give.
    """
    t = _tallies()
    boxes = list(boxes)
    with_boxes = {b.image_id for b in boxes}
    frames = {img.id: _frame(img, probes.get(img.id), img.id in with_boxes, t) for img in images}
    out: dict[int, Box] = {}
    for b in boxes:
        raw = b.bbox
        if not isinstance(raw, (list, tuple)) or len(raw) != 4 or not all(_is_number(v) for v in raw):
            t["box_malformed"].add(f"{b.label()}: bbox {raw!r}"[:160])
            continue
        frame = frames.get(b.image_id)
        if frame is None or not frame.usable:
            continue  # unknown image (reported by the caller) or a refused image
        x, y, w, h = (float(v) for v in raw)
        if w <= 0 or h <= 0:
            t["box_degenerate"].add(f"{b.label()}: bbox {list(raw)}")
            continue
        x, y, w, h = x * frame.sx, y * frame.sy, w * frame.sx, h * frame.sy
        scale = frame.sx * frame.sy
        if frame.width is None or frame.height is None:
            out[b.index] = Box(x, y, w, h, scale)
            continue
        W, H = frame.width, frame.height
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        where = f"{b.label()}: bbox {list(raw)} in a {_fmt(W)}x{_fmt(H)} image"
        if x1 <= x0 or y1 <= y0:
            t["box_outside_image"].add(where)
            continue
        over = max(-x, -y, x + w - W, y + h - H)
        if over > BORDER_TOLERANCE_PX:
            t["box_past_border"].add(where)
        out[b.index] = Box(x0, y0, x1 - x0, y1 - y0, scale * ((x1 - x0) * (y1 - y0)) / (w * h))
    findings = [f for tally in t.values() if (f := tally.finding(strict)) is not None]
    findings.sort(key=lambda f: not f.refused)
    sizes = {i: (int(round(f.width)), int(round(f.height))) for i, f in frames.items()
             if f.width is not None and f.height is not None}
    return PolicyReport(source, out, sizes, findings, total_boxes=len(boxes))


def refusal_text(report: PolicyReport, where: str) -> str:
    """The refused findings of ``report`` as one error message: what, where, what to do."""
    refused = report.refused
    head = (f"{where} ({report.source}): the data policy refuses {len(refused)} kind"
            f"{'s' if len(refused) != 1 else ''} of problem that training cannot work around:")
    lines = [f"  - {f.summary()}. Fix: {f.fix}" for f in refused]
    return "\n".join([head, *lines])
