"""The best trial's detections on a few validation images, drawn beside their ground truth.

A curve says a trial scored 0.6; a picture shows what that means. At the end of a run (and
on ``automl report``) the best trial's checkpoint runs ``dino inference`` through the
study's launcher (a container when the trials ran in containers, on the CPU so it never
competes with trials for a GPU), with the spec the trial trained with, on the first N
images (by id) of the validation set it was scored on. Each image is then drawn twice,
side by side: its annotations as the data policy reads them (:mod:`dino.data.policy`, the
boxes training and evaluation used) and the detections scoring at least the threshold::

    <report>/predictions/
      val_<image id>.png    ground truth | the trial's detections, with class names and scores
      showcase.json         trial, checkpoint, threshold and, per image, what was drawn
      inputs/               the N images and a COCO file listing them (the job's input)
      job/                  the inference job's folder and log

The folder is written beside the old one and swapped in at the end, so a reader (or a
second worker finishing at the same time) never sees half of it. The core returns a
:class:`Showcase`; the report and the terminal render it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from automl.launchers.base import Launcher
from automl.study.tasks import run_task
from dino.config.yaml_values import load_yaml
from dino.data.policy import BoxEntry, ImageEntry, ImageProbe, apply_orientation, apply_policy, probe_image
from dino.draw import compare_pictures, parse_colors

DEFAULT_IMAGES = 4
DEFAULT_CONF_THRESHOLD = 0.3
MAX_DRAWN = 30  # detections drawn per image at most (the most confident)
MANIFEST = "showcase.json"
FOLDER = "predictions"


@dataclasses.dataclass(frozen=True)
class Picture:
    """One validation image drawn: ground truth beside the detections."""

    image_id: int
    file_name: str  # as the validation annotations name it
    path: Path  # the PNG
    ground_truth: int  # boxes drawn on the left
    shown: int  # detections drawn on the right (score >= threshold)
    top_score: float | None  # the best detection's score, drawn or not


@dataclasses.dataclass(frozen=True)
class Showcase:
    """What :func:`make_showcase` produced, or why it produced nothing (``problem``)."""

    folder: Path
    trial: int
    checkpoint: str
    conf_threshold: float
    requested: int  # images asked for
    pictures: tuple[Picture, ...] = ()
    problem: str | None = None
    log: Path | None = None  # the inference job's log

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.pictures)

    def matches(self, trial: int, checkpoint: Path | str, images: int | None = None,
                conf_threshold: float | None = None) -> bool:
        """Made from this trial's checkpoint (with these settings; None: any) and its pictures still exist."""
        return (self.ok and self.trial == trial and self.checkpoint == str(checkpoint)
                and images in (None, self.requested) and conf_threshold in (None, self.conf_threshold)
                and all(p.path.is_file() for p in self.pictures))

    def save(self, into: Path | None = None) -> Path:
        """``showcase.json`` in ``into`` (default: its folder)."""
        data = dataclasses.asdict(self)
        data["folder"] = str(self.folder)
        data["log"] = None if self.log is None else str(self.log)
        for pic in data["pictures"]:
            pic["path"] = Path(pic["path"]).name  # relative: the folder may be moved
        path = Path(into or self.folder) / MANIFEST
        path.write_text(json.dumps(data, indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> Showcase | None:
        """The showcase recorded in ``folder``, or None when there is none (or it is unreadable)."""
        folder = Path(folder)
        try:
            data = json.loads((folder / MANIFEST).read_text())
            pictures = tuple(Picture(**{**p, "path": folder / p["path"]}) for p in data.pop("pictures"))
            log = data.pop("log")
            data.pop("folder")
            return cls(folder=folder, pictures=pictures, log=None if log is None else Path(log), **data)
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclasses.dataclass(frozen=True)
class _ValImage:
    image_id: int
    file_name: str
    path: Path
    entry: dict[str, Any]  # the COCO images entry
    boxes: list[dict[str, Any]]  # annotations, as corrected by the data policy


def _val_source(spec: dict[str, Any]) -> tuple[Path, Path]:
    """(image_dir, json_file) of the trial's first validation source; ValueError if none."""
    sources = (spec.get("dataset") or {}).get("val_data_sources") or []
    if isinstance(sources, dict):
        sources = [sources]
    for src in sources:
        if isinstance(src, dict) and src.get("image_dir") and src.get("json_file"):
            return Path(src["image_dir"]), Path(src["json_file"])
    raise ValueError("the trial's spec names no validation source (dataset.val_data_sources)")


def _pick_images(image_dir: Path, json_file: Path, count: int) -> tuple[list[_ValImage], dict[int, str]]:
    """The first ``count`` images by id, with their boxes as the data policy reads them."""
    try:
        coco = json.loads(json_file.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the validation annotations {json_file}: {exc}") from None
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories", [])}
    chosen = sorted(coco.get("images", []), key=lambda im: int(im["id"]))[:count]
    if not chosen:
        raise ValueError(f"the validation annotations {json_file} list no images")
    ids = {int(im["id"]) for im in chosen}
    annotations = [(k, a) for k, a in enumerate(coco.get("annotations", [])) if int(a.get("image_id", -1)) in ids]
    probes: dict[int, ImageProbe] = {}
    for im in chosen:
        path = image_dir / str(im["file_name"])
        try:
            probes[int(im["id"])] = probe_image(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"validation image {path} cannot be read: {exc}") from None
    entries = [ImageEntry(int(im["id"]), str(im["file_name"]), im.get("width"), im.get("height")) for im in chosen]
    boxes = [BoxEntry(k, a.get("id"), int(a["image_id"]), a.get("bbox")) for k, a in annotations]
    report = apply_policy(entries, boxes, probes, source=str(json_file))
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for k, a in annotations:
        fixed = report.boxes.get(k)
        if fixed is not None:
            by_image[int(a["image_id"])].append({"bbox": fixed.xywh(), "category_id": int(a["category_id"])})
    out = [_ValImage(int(im["id"]), str(im["file_name"]), image_dir / str(im["file_name"]), im,
                     by_image[int(im["id"])]) for im in chosen]
    return out, names


def _write_inputs(images: list[_ValImage], names: dict[int, str], folder: Path) -> Path:
    """Copy the images into ``folder`` (flat, numbered) with a COCO file listing them under
    their own ids, so the predictions carry the validation set's image ids."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for k, im in enumerate(images):
        name = f"{k:02d}_{Path(im.file_name).name}"
        shutil.copyfile(im.path, folder / name)
        listed.append({**im.entry, "file_name": name})
    listing = folder.parent / "inputs.json"
    listing.write_text(json.dumps({"images": listed, "annotations": [],
                                   "categories": [{"id": i, "name": n} for i, n in sorted(names.items())]}))
    return listing


def make_showcase(
    *,
    study_name: str,
    trial: int,
    spec: Path,
    checkpoint: Path,
    launcher: Launcher,
    train_command: list[str] | tuple[str, ...],
    folder: Path,
    images: int = DEFAULT_IMAGES,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    read_only_paths: tuple[Path, ...] = (),
    timeout_s: float = 900.0,
    reuse: bool = True,
) -> Showcase:
    """Draw trial ``trial``'s detections beside the ground truth on the first ``images``
    validation images into ``folder`` (replacing what was there). With ``reuse``, pictures
    already there from the same trial, checkpoint, count and threshold are kept (a resumed
    study that ran nothing new draws nothing again). Never raises for what the data, the
    checkpoint or the job do: the returned Showcase says what went wrong."""
    folder = Path(folder).resolve()
    existing = Showcase.load(folder) if reuse else None
    if existing is not None and existing.matches(trial, checkpoint, images, conf_threshold):
        return existing
    work = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        result = _make(study_name, trial, Path(spec), Path(checkpoint), launcher, train_command, work, folder,
                       images, conf_threshold, read_only_paths, timeout_s)
    except (OSError, ValueError) as exc:  # e.g. a launcher that cannot start the job, a disk full
        result = Showcase(folder, trial, str(checkpoint), conf_threshold, images,
                          problem=f"the pictures could not be made: {type(exc).__name__}: {exc}")
    result.save(work)
    _swap_in(work, folder)
    return Showcase.load(folder) or result


def _swap_in(work: Path, folder: Path) -> None:
    """Replace ``folder`` by ``work``: two renames, so a reader sees the old folder or the new
    one. If another worker swapped its own in between, its pictures stay and ours go."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    try:
        os.replace(folder, old)
    except FileNotFoundError:  # the first pictures (or another worker's swap is under way)
        pass
    try:
        os.replace(work, folder)
    except OSError:  # the folder is back (not empty): a concurrent worker's, of the same best trial
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _make(study_name: str, trial: int, spec_path: Path, checkpoint: Path, launcher: Launcher,
          train_command: list[str] | tuple[str, ...], work: Path, final: Path, count: int, conf_threshold: float,
          read_only_paths: tuple[Path, ...], timeout_s: float) -> Showcase:
    """Make the pictures in ``work``; the paths in the result are where they will be (``final``)."""

    def failed(problem: str, log: Path | None = None) -> Showcase:
        return Showcase(final, trial, str(checkpoint), conf_threshold, count, problem=problem,
                        log=None if log is None else final / log.relative_to(work))

    if not checkpoint.is_file():
        return failed(f"trial {trial}'s checkpoint {checkpoint} is gone")
    try:
        spec = load_yaml(spec_path.read_text()) or {}
        image_dir, json_file = _val_source(spec)
        chosen, names = _pick_images(image_dir, json_file, count)
        colors = parse_colors(dict((spec.get("inference") or {}).get("color_map") or {}))  # as dino inference draws
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return failed(f"no validation images to draw on: {exc}")
    inputs = work / "inputs"
    listing = _write_inputs(chosen, names, inputs)
    run = run_task(launcher, train_command, "inference", study_name=study_name, trial_number=trial,
                   spec=spec_path, out_dir=work / "job",
                   overrides=[f"inference.checkpoint={checkpoint}", "inference.conf_threshold=0",
                              f"dataset.infer_data_sources.image_dir={json.dumps([str(inputs)])}",
                              f"dataset.infer_data_sources.json_file={listing}"],
                   read_only_paths=(checkpoint.resolve().parent, inputs, listing, *read_only_paths),
                   timeout_s=timeout_s)
    predictions_file = run.out_dir / "inference" / "predictions.json"
    if not run.ok or not predictions_file.exists():
        return failed(f"dino inference on {len(chosen)} validation images failed (exit {run.result.exit_code}); "
                      f"see {final / run.log.relative_to(work)}", run.log)
    try:
        detections = json.loads(predictions_file.read_text())
    except ValueError as exc:
        return failed(f"dino inference wrote an unreadable {predictions_file.name}: {exc}", run.log)
    shutil.rmtree(run.out_dir / "inference" / "images_annotated", ignore_errors=True)  # ours are drawn below
    by_image: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        by_image.setdefault(int(det["image_id"]), []).append(det)
    pictures = []
    for im in chosen:
        dets = sorted(by_image.get(im.image_id, []), key=lambda d: -float(d["score"]))
        shown = [d for d in dets if float(d["score"]) >= conf_threshold][:MAX_DRAWN]
        top = float(dets[0]["score"]) if dets else None
        right = f"trial {trial}: {len(shown)} detection(s) with score >= {conf_threshold:.2f}"
        if not shown:
            right = (f"trial {trial}: none with score >= {conf_threshold:.2f}"
                     + ("" if top is None else f" (best {top:.2f})"))
        with Image.open(im.path) as raw:
            raw.load()
            shown_image = apply_orientation(raw).convert("RGB")
        picture = compare_pictures(shown_image, im.boxes, shown, names, colors,
                                   (f"ground truth: {len(im.boxes)} object(s)", right))
        path = work / f"val_{im.image_id}.png"
        picture.save(path)
        pictures.append(Picture(im.image_id, im.file_name, final / path.name, len(im.boxes), len(shown), top))
    return Showcase(final, trial, str(checkpoint), conf_threshold, count, tuple(pictures),
                    log=final / run.log.relative_to(work))
