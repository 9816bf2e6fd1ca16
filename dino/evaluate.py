"""``dino evaluate``: COCO mAP of a checkpoint on ``dataset.test_data_sources`` (or, when
that is unset, ``val_data_sources``). Writes ``<eval dir>/status.json`` (kpi ``test_mAP``,
``test_mAP50`` as strings, ``test_loss``), ``metrics.json`` (all 12 COCOeval numbers)
and ``detections.json`` (COCO results), and prints ``Test mAP : <v>`` / ``Test mAP50 : <v>``.
"""

from __future__ import annotations

import json
import os
import sys

from dino.checkpoint import checkpoint_for, load_checkpoint, model_state, task_dir_of
from dino.config import Spec, SpecError
from dino.data import build_dataset, val_loader
from dino.engine import evaluate
from dino.runtime import SignalGuard, log, select_device
from dino.status_log import StatusLog

COCO_STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def eval_dir_of(spec: Spec) -> str:
    return task_dir_of(spec, "evaluate", spec.evaluate.results_dir)


def checkpoint_to_evaluate(spec: Spec) -> str:
    return checkpoint_for(spec, "evaluate", spec.evaluate.checkpoint)


def run_evaluation(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    with SignalGuard():
        return _evaluate(spec, ignored, status)


def _evaluate(spec: Spec, ignored: list[str], status: StatusLog) -> dict:
    from dino.models import build_dino

    d, e = spec.dataset, spec.evaluate
    if ignored:
        text = "Ignored spec fields (accepted, not used by this trainer): " + "; ".join(ignored)
        log(text, file=sys.stderr)
        status.write(text, verbosity="WARNING")
    ckpt_path = checkpoint_to_evaluate(spec)
    use_test = any(s.json_file for s in d.test_data_sources)
    where = "dataset.test_data_sources" if use_test else "dataset.val_data_sources"
    ds = build_dataset(d.test_data_sources if use_test else d.val_data_sources, d, False, where)
    device = select_device(e.gpu_ids, "evaluate.gpu_ids")
    try:
        model, criterion, post = build_dino(spec.model, d.num_classes)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    ckpt = load_checkpoint(ckpt_path)
    try:
        model.load_state_dict(model_state(ckpt))
    except RuntimeError as exc:
        hint = ""
        if ckpt.get("num_classes") not in (None, d.num_classes):
            hint = f"; it was trained with dataset.num_classes={ckpt['num_classes']}"
        raise SpecError(f"checkpoint {ckpt_path} does not fit this spec's model{hint} "
                        f"({str(exc).splitlines()[0]})") from None
    model.to(device)
    criterion.to(device)
    status.write(f"Evaluating {ckpt_path} on {len(ds)} images of {where}")
    batch = e.batch_size if e.batch_size > 0 else d.batch_size
    precision = spec.train.precision if device.type == "cuda" else "fp32"
    res = evaluate(model, criterion, post, val_loader(ds, d, batch, d.pin_memory and device.type == "cuda"), ds.coco,
                   device, precision, conf_threshold=e.conf_threshold)
    log(f"Test mAP : {res['mAP']}")
    log(f"Test mAP50 : {res['mAP50']}")
    out_dir = eval_dir_of(spec)
    metrics = {**dict(zip(COCO_STAT_NAMES, res["stats"])), "loss": res["loss"], "checkpoint": ckpt_path,
               "num_images": len(ds)}
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(out_dir, "detections.json"), "w", encoding="utf-8") as f:
        json.dump(res["detections"], f)
    status.kpi = {"test_mAP": str(res["mAP"]), "test_mAP50": str(res["mAP50"]), "test_loss": res["loss"]}
    status.write("Test metrics generated.")
    return metrics
