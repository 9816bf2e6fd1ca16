"""``dino inference``: a checkpoint's detections on a folder of images, as COCO results and pictures.

Reads TAO's inference spec (``inference.*``, ``dataset.infer_data_sources``) and writes
into ``<results_dir>/inference`` (``inference.results_dir`` overrides):

    predictions.json     COCO results [{image_id, category_id, bbox [x, y, w, h], score}],
                         what pycocotools' ``COCO.loadRes`` takes
    images.json          the image ids with their file names and sizes, and the class
                         names, as a COCO file without annotations: ``COCO("images.json")
                         .loadRes("predictions.json")`` works when no annotation file exists
    images_annotated/    every image with its boxes, class names and scores drawn
    status.json          STARTED, progress lines, SUCCESS / FAILURE, as ``train``

Images are resized, normalised and batched exactly as validation images (shorter side
``dataset.augmentation.test_random_resize``, batches padded to their largest image), so
on the same images, batch size and threshold it gives ``dino evaluate``'s detections.
Image ids are those of ``infer_data_sources.json_file`` when given, else 1..N in file
order. Detections scoring at or below ``inference.conf_threshold`` are neither written
nor drawn (0 keeps all ``model.num_select`` per image, what COCO mAP wants).
Everything a user can get wrong is checked before the model is built (exit 2).
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import sys
import time

import torch

from dino.checkpoint import checkpoint_for, load_trained, task_dir_of
from dino.config import Spec, SpecError
from dino.config.inference_config import InferenceConfig
from dino.data import pad_multiple, val_loader
from dino.data.coco import DataError, load_image
from dino.data.infer import WHERE, InferenceDataset, InferImage, InferSet, check_decodable, list_images
from dino.draw import draw_detections, parse_colors
from dino.engine import coco_results, inference_forward, to_device, to_fp32
from dino.runtime import Interrupted, SignalGuard, log, select_device
from dino.status_log import StatusLog

PROGRESS_LINES = 20  # about this many progress lines per run, whatever its length


def inference_dir_of(spec: Spec) -> str:
    return task_dir_of(spec, "inference", spec.inference.results_dir)


def checkpoint_to_infer(spec: Spec) -> str:
    return checkpoint_for(spec, "inference", spec.inference.checkpoint)


def check_inference_config(cfg: InferenceConfig) -> None:
    """SpecError naming the first ``inference.*`` value that cannot be run."""
    if not 0.0 <= cfg.conf_threshold <= 1.0:
        raise SpecError(f"inference.conf_threshold={cfg.conf_threshold} must be in [0, 1]")
    if cfg.batch_size == 0 or cfg.batch_size < -1:
        raise SpecError(f"inference.batch_size={cfg.batch_size} must be -1 (dataset.batch_size) or >= 1")
    if cfg.outline_width < 1:
        raise SpecError(f"inference.outline_width={cfg.outline_width} must be >= 1")
    if cfg.num_gpus < 1:
        raise SpecError(f"inference.num_gpus={cfg.num_gpus} must be >= 1")
    if any(i < 0 for i in cfg.gpu_ids):
        raise SpecError(f"inference.gpu_ids {cfg.gpu_ids} must be device indices >= 0")


def _check_names(infer: InferSet, num_classes: int, color_map: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """Class names fit the model and ``color_map`` names known classes; returns the colours."""
    if infer.names and max(infer.names) >= num_classes:
        top = max(infer.names)
        raise DataError(f"{WHERE} names category id {top} ({infer.names[top]!r}) but dataset.num_classes is "
                        f"{num_classes}: the model has class ids 0..{num_classes - 1}; check the classmap or "
                        f"dataset.num_classes")
    try:
        colors = parse_colors(color_map)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    known = set(infer.names.values())
    for name in colors:
        if known and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (classes: {', '.join(sorted(known))})"
            raise SpecError(f"inference.color_map names {name!r}, which is not a class name{hint}")
    return colors


def annotated_path(out_dir: str, image: InferImage, several_sources: bool) -> str:
    """``<out>/images_annotated/[<source index>/]<file_name>``, kept inside the folder."""
    parts = [p for p in os.path.normpath(image.file_name).split(os.sep) if p not in ("", ".", "..")]
    rel = os.path.join(*parts) if parts else f"image_{image.image_id}.png"
    base = os.path.join(out_dir, "images_annotated")
    return os.path.join(base, str(image.source), rel) if several_sources else os.path.join(base, rel)


def run_inference(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    """Run per ``spec.inference``; SpecError / DataError for bad input, Interrupted on SIGTERM."""
    with SignalGuard() as guard:
        try:
            return _infer(spec, ignored, status)
        except Interrupted:
            raise
        except Exception as exc:  # e.g. a DataLoader worker killed by the same signal first
            if guard.received:
                raise Interrupted(guard.received) from exc
            raise


def _infer(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    cfg, d = spec.inference, spec.dataset
    if ignored:
        text = "Ignored spec fields (accepted, not used by this trainer): " + "; ".join(ignored)
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")
    check_inference_config(cfg)
    if cfg.num_gpus > 1:
        text = f"inference.num_gpus={cfg.num_gpus}: inference runs in one process, on inference.gpu_ids[0]"
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")
    checkpoint = checkpoint_to_infer(spec)
    infer = list_images(d.infer_data_sources)
    check_decodable(infer.images)
    colors = _check_names(infer, d.num_classes, cfg.color_map)
    out_dir = inference_dir_of(spec)
    several = len(d.infer_data_sources.image_dir) > 1
    try:
        os.makedirs(os.path.join(out_dir, "images_annotated"), exist_ok=True)
    except OSError as exc:
        raise SpecError(f"inference results folder {out_dir}: cannot create it ({exc.strerror})") from None
    if infer.unlisted:
        text = (f"{infer.unlisted} image files in {d.infer_data_sources.image_dir[0]} are not listed in "
                f"{d.infer_data_sources.json_file} and were skipped")
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")

    device = select_device(cfg.gpu_ids, "inference.gpu_ids")
    model, _, post = load_trained(spec, checkpoint, "inference")
    model.to(device)
    precision = spec.train.precision if device.type == "cuda" else "fp32"
    batch = cfg.batch_size if cfg.batch_size > 0 else d.batch_size
    images = infer.images
    loader = val_loader(InferenceDataset(images, d.augmentation), d, batch, d.pin_memory and device.type == "cuda",
                        multiple=pad_multiple(device))
    n_batches, by_id = len(loader), {im.image_id: im for im in images}
    status.write(f"Running {checkpoint} on {len(images)} images of {WHERE} ({device.type}, batch {batch}, "
                 f"conf_threshold {cfg.conf_threshold})")
    log(f"Inference: {len(images)} images in {n_batches} batches of {batch} on {device}")

    detections: list[dict] = []
    sizes: dict[int, tuple[int, int]] = {}
    every = max(1, -(-n_batches // PROGRESS_LINES))
    began, done = time.time(), 0
    model.eval()
    forward = inference_forward(model, device, precision)
    with torch.no_grad():
        for step, (pixels, masks, targets) in enumerate(loader, 1):
            pixels, masks, targets = to_device(pixels, masks, targets, device)
            outputs = to_fp32(forward(pixels, masks))
            orig = torch.stack([t["orig_size"] for t in targets])
            for t, res in zip(targets, post(outputs, orig)):
                image = by_id[int(t["image_id"])]
                dets = coco_results(image.image_id, res, cfg.conf_threshold)
                detections.extend(dets)
                h, w = (int(v) for v in t["orig_size"])
                sizes[image.image_id] = (w, h)
                _save_drawn(load_image(image.path), dets, infer.names, colors, cfg.outline_width,
                            annotated_path(out_dir, image, several))
            done += len(targets)
            if step % every == 0 or step == n_batches:
                elapsed = time.time() - began
                eta = datetime.timedelta(seconds=round(elapsed / step * (n_batches - step)))
                log(f"  batch {step}/{n_batches}  {done}/{len(images)} images  {done / max(elapsed, 1e-9):.1f} img/s"
                    f"  eta {eta}")
                status.write("Inference in progress", step=step, max_step=n_batches, images=done,
                             max_images=len(images), time_per_step=str(datetime.timedelta(seconds=elapsed / step)),
                             eta=str(eta))

    predictions = os.path.join(out_dir, "predictions.json")
    listing = os.path.join(out_dir, "images.json")
    _write_json(predictions, detections)
    _write_json(listing, {
        "images": [{"id": im.image_id, "file_name": im.file_name, "path": im.path, "width": sizes[im.image_id][0],
                    "height": sizes[im.image_id][1]} for im in images],
        "categories": [{"id": i, "name": name} for i, name in sorted(infer.names.items())],
        "annotations": [],
    })
    log(f"Predictions : {predictions} ({len(detections)} detections on {len(images)} images)")
    log(f"Annotated images : {os.path.join(out_dir, 'images_annotated')}")
    status.write(f"Inference results written: {predictions}", predictions=predictions, images_json=listing,
                 annotated_dir=os.path.join(out_dir, "images_annotated"), num_images=len(images),
                 num_detections=len(detections))
    return {"predictions": predictions, "images_json": listing, "num_images": len(images),
            "num_detections": len(detections)}


def _save_drawn(image, dets: list[dict], names: dict[int, str], colors, outline_width: int, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    drawn = draw_detections(image, dets, names, colors, outline_width)
    tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"  # keeps the extension: PIL picks the format by it
    try:
        drawn.save(tmp, quality=95) if path.lower().endswith((".jpg", ".jpeg")) else drawn.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
