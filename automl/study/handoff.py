"""From "the study is done" to a folder a person can forward: the best trial's model
exported, evaluated on a held-out test set and run on a folder of images.

``hand_over`` runs ``dino export`` / ``evaluate`` / ``inference`` on the best trial's
checkpoint through the study's launcher (containers like the trials), each with the spec
the trial trained with, so every structural setting (backbone, queries, classes, sizes)
carries over. It writes into one folder::

    handoff/
      README.md            what this is, the test metrics, how to use the ONNX file
      model.onnx           the export, verified against PyTorch by ONNX Runtime
      checkpoint.pth       the PyTorch checkpoint it came from
      spec.yaml            the trial's full spec
      metrics.json         mAP, mAP50 and COCOeval's 12 numbers on the test set (--evaluate)
      per_class_ap.json    AP per class on the test set
      predictions.json     COCO results on --infer's images; pictures/ a few of them drawn
      jobs/                each task's own results folder and log

The core returns a :class:`Handoff`; the CLI renders it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from automl.datasets.staging import StagedSplit
from automl.launchers.base import Launcher
from automl.study.best_export import export_best
from automl.study.events import Note, Observer
from automl.study.slots import Slot
from automl.study.tasks import TaskRun, run_task
from dino.config.yaml_values import load_yaml

PICTURES = 8  # drawn images copied into the folder


@dataclasses.dataclass(frozen=True)
class BestTrial:
    """What the hand-off needs of the study's best trial."""

    study_name: str
    number: int
    metric: str
    value: float
    params: dict[str, Any]
    spec: Path
    checkpoint: Path
    trained_on: str | None = None  # the trial's device attribute: "cuda:0,cuda:1" or "cpu"


def task_devices(trained_on: str | None, available: Sequence[int]) -> tuple[int, ...]:
    """The GPU for the hand-off's evaluate and inference (a few seconds there, minutes on
    a CPU for an R50): the first one the trial trained on while this machine still has
    it, else this machine's first; none (the CPU) on a machine without GPUs. The export
    stays on the CPU: its check runs ONNX Runtime's CPU provider against PyTorch."""
    if not available:
        return ()
    recorded = Slot.parse(trained_on).devices
    return (recorded[0],) if recorded and recorded[0] in available else (min(available),)


def where(devices: tuple[int, ...]) -> str:
    return f"GPU {devices[0]}" if devices else "the CPU"


@dataclasses.dataclass
class Handoff:
    folder: Path
    trial: BestTrial
    model: Path | None = None
    metrics: dict[str, Any] | None = None
    per_class: list[dict[str, Any]] | None = None
    predictions: Path | None = None
    pictures: list[Path] = dataclasses.field(default_factory=list)
    readme: Path | None = None
    runs: list[TaskRun] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)  # tasks that failed, with their logs

    @property
    def ok(self) -> bool:
        return not self.problems


def classmap_for(spec: dict[str, Any]) -> list[str]:
    """Class names for ``dino inference`` (line i names category id i + 1), read from the
    trial's training annotations; ids the file does not name get ``class_<id>``."""
    sources = (spec.get("dataset") or {}).get("train_data_sources") or []
    names: dict[int, str] = {}
    for src in sources:
        json_file = (src or {}).get("json_file")
        if json_file and Path(json_file).exists():
            for cat in json.loads(Path(json_file).read_text()).get("categories", []):
                names[int(cat["id"])] = str(cat.get("name") or f"class_{cat['id']}")
    top = max(names, default=0)
    return [names.get(i, f"class_{i}") for i in range(1, top + 1)]


def _copy(src: Path, dst: Path) -> Path:
    """Hard link where the file system allows (checkpoints are large), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def hand_over(
    best: BestTrial,
    folder: Path,
    launcher: Launcher,
    train_command: list[str],
    *,
    export: bool = True,
    test_split: StagedSplit | None = None,
    images: Path | None = None,
    conf_threshold: float = 0.3,
    read_only_paths: tuple[Path, ...] = (),
    timeout_s: float = 3600.0,
    devices: tuple[int, ...] = (),
    emit: Observer = lambda event: None,
) -> Handoff:
    """Export, evaluate on ``test_split`` and infer on ``images``, as asked, into ``folder``;
    evaluate and inference on ``devices`` (:func:`task_devices`), the export on the CPU."""
    folder = Path(folder).resolve()
    jobs = folder / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    out = Handoff(folder, best)
    _copy(best.spec, folder / "spec.yaml")
    _copy(best.checkpoint, folder / "checkpoint.pth")
    ckpt_dir = best.checkpoint.resolve().parent

    def task(name: str, overrides: list[str], inputs: tuple[Path, ...]) -> TaskRun:
        run = run_task(launcher, train_command, name, study_name=best.study_name, trial_number=best.number,
                       spec=best.spec, out_dir=jobs / name, overrides=overrides,
                       read_only_paths=(ckpt_dir, *inputs, *read_only_paths), timeout_s=timeout_s,
                       devices=devices)
        out.runs.append(run)
        return run

    if export:
        emit(Note(f"exporting trial {best.number}'s checkpoint {best.checkpoint.name} to {folder / 'model.onnx'}"))
        result, log = export_best(launcher, train_command, best.study_name, best.number, best.spec, best.checkpoint,
                                  folder / "model.onnx", read_only_paths, timeout_s)
        if result.exit_code == 0 and (folder / "model.onnx").exists():
            out.model = folder / "model.onnx"
        else:
            out.problems.append(f"export failed (exit {result.exit_code}); see {log}")

    if test_split is not None:
        emit(Note(f"evaluating on {test_split.json_file} ({where(devices)})"))
        source = {"image_dir": str(test_split.image_dir), "json_file": str(test_split.json_file)}
        run = task("evaluate", [f"evaluate.checkpoint={best.checkpoint}",
                                f"dataset.test_data_sources={json.dumps([source])}"],
                   (Path(test_split.image_dir), Path(test_split.json_file)))
        metrics_file, per_class_file = run.out_dir / "evaluate" / "metrics.json", run.out_dir / "evaluate" / "per_class_ap.json"
        if run.ok and metrics_file.exists():
            out.metrics = json.loads(metrics_file.read_text())
            _copy(metrics_file, folder / "metrics.json")
            if per_class_file.exists():
                out.per_class = json.loads(per_class_file.read_text()).get("classes")
                _copy(per_class_file, folder / "per_class_ap.json")
        else:
            out.problems.append(f"evaluation failed (exit {run.result.exit_code}); see {run.log}")

    if images is not None:
        emit(Note(f"running inference on {images} ({where(devices)})"))
        spec = load_yaml(best.spec.read_text()) or {}
        names = classmap_for(spec)
        overrides = [f"inference.checkpoint={best.checkpoint}", f"inference.conf_threshold={conf_threshold}",
                     f"dataset.infer_data_sources.image_dir={json.dumps([str(Path(images).resolve())])}"]
        if names:  # inside the task's folder: the one a container sees besides its inputs
            classmap = jobs / "inference" / "classmap.txt"
            classmap.parent.mkdir(parents=True, exist_ok=True)
            classmap.write_text("\n".join(names) + "\n")
            overrides.append(f"dataset.infer_data_sources.classmap={classmap}")
        run = task("inference", overrides, (Path(images).resolve(),))
        predictions = run.out_dir / "inference" / "predictions.json"
        if run.ok and predictions.exists():
            out.predictions = _copy(predictions, folder / "predictions.json")
            drawn = sorted((run.out_dir / "inference" / "images_annotated").rglob("*.*"))[:PICTURES]
            out.pictures = [_copy(p, folder / "pictures" / p.name) for p in drawn]
        else:
            out.problems.append(f"inference failed (exit {run.result.exit_code}); see {run.log}")

    out.readme = write_readme(out)
    return out


def write_readme(h: Handoff) -> Path:
    """``README.md``: a summary a person can forward."""
    t = h.trial
    lines = [f"# DINO detector from study `{t.study_name}`, trial {t.number}", "",
             f"Best {t.metric} during tuning: **{t.value:.4f}** (checkpoint `{t.checkpoint.name}`).", "",
             "## Files", ""]
    files = [("model.onnx", "the detector as ONNX, checked against PyTorch with ONNX Runtime when exported"),
             ("checkpoint.pth", "the PyTorch checkpoint (`dino evaluate/inference/export -e spec.yaml`)"),
             ("spec.yaml", "the full training spec of this trial"),
             ("metrics.json", "test-set metrics (mAP = AP@[.5:.95], mAP50 and COCOeval's 12 numbers)"),
             ("per_class_ap.json", "AP per class on the test set"),
             ("predictions.json", "COCO-format detections on the images given to --infer"),
             ("pictures/", "some of those images with their detections drawn")]
    for name, what in files:
        if (h.folder / name.rstrip("/")).exists():
            lines.append(f"- `{name}`: {what}")
    if h.metrics:
        m = h.metrics
        lines += ["", "## Test set", "",
                  f"{m.get('num_images', '?')} images of `{m.get('split', 'test')}`: mAP@[.5:.95] "
                  f"**{m.get('mAP', 0.0):.4f}**, mAP50 **{m.get('mAP50', 0.0):.4f}**.", ""]
        if h.per_class:
            lines += ["| class | AP | AP50 | ground truth | detections |", "|---|---|---|---|---|"]
            for row in h.per_class:
                ap = "-" if row.get("ap") is None else f"{row['ap']:.4f}"
                ap50 = "-" if row.get("ap50") is None else f"{row['ap50']:.4f}"
                lines.append(f"| {row.get('name', row.get('category_id'))} | {ap} | {ap50} | "
                             f"{row.get('num_gt', '')} | {row.get('num_det', '')} |")
    lines += ["", "## Tuned parameters", ""] + [f"- `{k}`: {v}" for k, v in sorted(t.params.items())]
    if h.model:
        spec = load_yaml((h.folder / "spec.yaml").read_text()) or {}
        aug, export = (spec.get("dataset") or {}).get("augmentation") or {}, spec.get("export") or {}
        lines += ["", "## Running model.onnx", "",
                  f"Input `inputs [batch, 3, {export.get('input_height', '?')}, {export.get('input_width', '?')}]`: "
                  f"RGB resized to that size, scaled to [0, 1], minus mean {aug.get('input_mean')} and divided by "
                  f"std {aug.get('input_std')} per channel.",
                  "Outputs `pred_logits [batch, queries, classes]` (raw: apply a sigmoid for scores, class index = "
                  "category id) and `pred_boxes [batch, queries, 4]` (cx, cy, w, h relative to the input). "
                  "Take the top-k scores over queries x classes, convert boxes to corners and scale them to the "
                  "original image: `dino/deploy.py` does exactly that in numpy, `docs/onnx_contract.md` explains it."]
    if h.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in h.problems]
    path = h.folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
