"""``dino evaluate``: COCO mAP of a checkpoint on one split, overall and per class.

The split is ``dataset.test_data_sources`` (TAO's evaluate spec) when any of its sources
is set, else ``val_data_sources``. Writes ``<eval dir>/status.json`` (kpi ``test_mAP``,
``test_mAP50`` as strings, ``test_loss``, as TAO names them), ``metrics.json`` (all 12
COCOeval numbers), ``per_class_ap.json`` (:mod:`dino.class_ap`) and ``detections.json``
(COCO results), and prints ``Test mAP : <v>`` / ``Test mAP50 : <v>`` and the per-class table.
Images are batched and resized exactly as in training's validation, so the last epoch's
``val_mAP`` is reproduced on the val split.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from dino.checkpoint import checkpoint_for, load_trained, task_dir_of
from dino.class_ap import format_table, mean_ap, per_class_ap, rows_without_detections
from dino.config import DatasetConfig, Spec
from dino.data import build_dataset, log_data_policy, pad_multiple, val_loader
from dino.engine import evaluate
from dino.runtime import SignalGuard, log, select_device
from dino.status_log import StatusLog

COCO_STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def eval_dir_of(spec: Spec) -> str:
    return task_dir_of(spec, "evaluate", spec.evaluate.results_dir)


def checkpoint_to_evaluate(spec: Spec) -> str:
    return checkpoint_for(spec, "evaluate", spec.evaluate.checkpoint)


def split_of(d: DatasetConfig) -> str:
    """The spec field of the split to score: the test sources when any is set (a half-set
    one then fails with its missing part named), else the validation sources."""
    if any(s.json_file or s.image_dir for s in d.test_data_sources):
        return "test_data_sources"
    return "val_data_sources"


def run_evaluation(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    with SignalGuard():
        return _evaluate(spec, ignored, status)


def _evaluate(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    d, e = spec.dataset, spec.evaluate
    if ignored:
        text = "Ignored spec fields (accepted, not used by this trainer): " + "; ".join(ignored)
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")
    ckpt_path = checkpoint_to_evaluate(spec)
    split = split_of(d)
    where = f"dataset.{split}"
    ds = build_dataset(getattr(d, split), d, False, where)
    log_data_policy(ds, log, status)
    device = select_device(e.gpu_ids, "evaluate.gpu_ids")
    model, criterion, post = load_trained(spec, ckpt_path, "evaluate")
    model.to(device)
    criterion.to(device)
    status.write(f"Evaluating {ckpt_path} on {len(ds)} images of {where}")
    batch = e.batch_size if e.batch_size > 0 else d.batch_size
    precision = spec.train.precision if device.type == "cuda" else "fp32"
    res = evaluate(model, criterion, post, val_loader(ds, d, batch, d.pin_memory and device.type == "cuda",
                                                         multiple=pad_multiple(device)), ds.coco,
                   device, precision, conf_threshold=e.conf_threshold)
    log(f"Test mAP : {res['mAP']}")
    log(f"Test mAP50 : {res['mAP50']}")
    rows = per_class_ap(res["coco_eval"]) if res["coco_eval"] is not None else rows_without_detections(ds.coco)
    log(f"Per-class AP ({where}, {len(ds)} images):\n{format_table(rows)}")
    out_dir = eval_dir_of(spec)
    metrics = {**dict(zip(COCO_STAT_NAMES, res["stats"])), "loss": res["loss"], "checkpoint": ckpt_path,
               "num_images": len(ds), "split": where}
    _write_json(os.path.join(out_dir, "metrics.json"), metrics, indent=2)
    per_class = {"split": where, "checkpoint": ckpt_path, "mAP": res["mAP"], "mean_of_classes": mean_ap(rows),
                 "classes": [dataclasses.asdict(r) for r in rows]}
    _write_json(os.path.join(out_dir, "per_class_ap.json"), per_class, indent=2)
    _write_json(os.path.join(out_dir, "detections.json"), res["detections"])
    status.kpi = {"test_mAP": str(res["mAP"]), "test_mAP50": str(res["mAP50"]), "test_loss": res["loss"]}
    status.write("Test metrics generated.")
    return {**metrics, "per_class": rows}


def _write_json(path: str, data, indent: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent)
