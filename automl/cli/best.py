"""``automl best``: the best trial of a study, and on request its hand-off.

    automl best [--study NAME] [--json]
    automl best [--study NAME] --evaluate TEST_SRC --export DIR --infer IMAGES_DIR

With any of ``--evaluate``, ``--export`` or ``--infer`` the best trial's checkpoint is
exported, evaluated and run on images through the study's launcher
(:mod:`automl.study.handoff`), into ``--export DIR`` (default ``<workspace>/<study>/handoff``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from automl.cli.run import add_study_arguments, open_study_of
from automl.errors import UserError
from automl.study.attrs import STUDY_AGGREGATE, STUDY_LAUNCHER, STUDY_METRIC, STUDY_TRAINER_COMMAND, TrialAttrs
from automl.study.events import Note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("best", help="the best trial; --evaluate/--export/--infer hand its model over", description=(
        "Print the best trial (value, params, spec, checkpoint). With --evaluate, --export or --infer, "
        "export its checkpoint to ONNX, score it on a test set and draw its detections on images, "
        "through the study's launcher, into one folder with a README."))
    add_study_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--evaluate", metavar="TEST_SRC",
                   help="a held-out COCO set to score on: folder, archive or s3:// prefix (images + annotations.json)")
    p.add_argument("--export", metavar="DIR", type=Path,
                   help="the hand-off folder (model.onnx, metrics, pictures, spec, README.md)")
    p.add_argument("--infer", metavar="IMAGES_DIR", type=Path, help="a folder of images to run the model on")
    p.add_argument("--conf-threshold", type=float, default=0.3,
                   help="--infer keeps and draws detections scoring above this (default 0.3; 0 keeps all)")
    p.add_argument("--no-export", action="store_true", help="hand off without the ONNX export")
    p.add_argument("--cpu", action="store_true",
                   help="evaluate and infer on the CPU (default: the GPU the trial trained on, or this machine's first)")
    p.add_argument("--launcher", help="run the tasks with this launcher instead of the study's (local or docker)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds each task may take (default 3600)")
    p.set_defaults(func=cmd_best)


def best_of_study(study: optuna.Study, workspace: Path):
    """(what ``automl best`` prints, the BestTrial a task can run on or None when its spec
    or checkpoint is gone); UserError when nothing completed."""
    from automl.study.best_checkpoint import checkpoint_for_value
    from automl.study.handoff import BestTrial
    from automl.study.results import best_own_trial

    best = best_own_trial(study)  # not a trial seeded from an earlier night
    if best is None:
        raise UserError(f"study {study.study_name!r} has no completed trial yet")
    recorded = TrialAttrs.of(best)
    # the checkpoint of the epoch the trial's value comes from (best means best)
    choice = checkpoint_for_value(best, study.user_attrs.get(STUDY_AGGREGATE, "best"),
                                  study.user_attrs.get(STUDY_METRIC, ""))
    ckpt = choice.path
    info = {
        "study": study.study_name, "trial": best.number, "value": best.value, "params": best.params,
        "spec": recorded.spec_path, "results_dir": recorded.results_dir, **choice.as_dict(),
    }
    if choice.note():
        info["checkpoint_note"] = choice.note()
    trial = None
    if recorded.spec_path and ckpt is not None and best.value is not None and Path(recorded.spec_path).exists():
        trial = BestTrial(study.study_name, best.number, study.user_attrs.get(STUDY_METRIC, "value"),
                          float(best.value), dict(best.params), Path(recorded.spec_path), ckpt,
                          trained_on=recorded.device)
    return info, trial


def launcher_of_study(study: optuna.Study, workspace: Path, name: str | None):
    """The launcher the study's trials ran with (``name`` overrides it), for tasks after the study."""
    from automl.launchers import LAUNCHERS

    record: dict[str, Any] = study.user_attrs.get(STUDY_LAUNCHER) or {"name": "local", "options": {}}
    options = dict(record.get("options") or {}) if name in (None, record.get("name")) else {}
    name = name or record.get("name", "local")
    if name == "local":
        options.setdefault("registry_dir", str((workspace / "jobs").resolve()))
    return LAUNCHERS.build(name, options)


def trainer_command_of_study(study: optuna.Study, launcher_name: str) -> list[str]:
    """The trainer command the study recorded (``dino train`` resolved beside this interpreter)."""
    command = list(study.user_attrs.get(STUDY_TRAINER_COMMAND) or ["dino", "train"])
    if launcher_name == "local" and command and os.sep not in command[0] and not shutil.which(command[0]):
        sibling = Path(sys.executable).parent / command[0]  # .venv/bin/automl without an activated venv
        if sibling.exists():
            command[0] = str(sibling)
    return command


def _stage_test(source: str, workspace: Path, trial) -> Any:
    """Stage and check the test set before any job runs: the files, the images, the boxes,
    the class count against the trial's ``dataset.num_classes``."""
    from automl.datasets.findings import has_errors
    from automl.datasets.preflight import check_split
    from automl.datasets.staging import stage
    from automl.ui.findings import render_findings
    from dino.config.yaml_values import load_yaml

    staged = stage(source, workspace / "cache")
    coco, findings = check_split("test", staged)
    spec = load_yaml(trial.spec.read_text()) or {}
    num_classes = int((spec.get("dataset") or {}).get("num_classes", 0))
    if coco is not None:
        top = max((int(c["id"]) for c in json.loads(Path(staged.json_file).read_text()).get("categories", [])),
                  default=0)
        if top >= num_classes:
            raise UserError(f"--evaluate {source}: the test set has category id {top}, but the model was trained with "
                            f"dataset.num_classes={num_classes} (ids 0..{num_classes - 1}); use a test set with the "
                            "training set's categories")
    if findings:
        render_findings(findings, title="Test set")
    if has_errors(findings):
        raise UserError(f"--evaluate {source}: the test set has errors (table above); fix them first")
    return staged


def cmd_best(args: argparse.Namespace) -> int:
    study = open_study_of(args)
    info, trial = best_of_study(study, args.workspace)
    handoff_asked = args.evaluate or args.export or args.infer
    if not handoff_asked:
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                print(f"{key:12s} {value}")
        return 0
    if trial is None:
        raise UserError(f"trial {info['trial']} of study {study.study_name!r} has no spec or checkpoint left on this "
                        f"machine (results dir {info['results_dir']}); nothing to hand over")
    if args.infer is not None and not args.infer.is_dir():
        raise UserError(f"--infer {args.infer}: not a folder of images")
    if not 0.0 <= args.conf_threshold <= 1.0:
        raise UserError(f"--conf-threshold {args.conf_threshold}: must be in [0, 1]")
    folder = args.export or (args.workspace / study.study_name / "handoff")
    test_split = _stage_test(args.evaluate, args.workspace, trial) if args.evaluate else None
    launcher = launcher_of_study(study, args.workspace, args.launcher)
    console = Console(stderr=True, highlight=False)

    def emit(event: object) -> None:
        if isinstance(event, Note):
            console.print(f"[bold]automl[/] {escape(event.text)}")

    from automl.study.handoff import hand_over, task_devices
    from automl.study.slots import detect_gpus

    devices = () if args.cpu else task_devices(trial.trained_on, detect_gpus())
    result = hand_over(trial, folder, launcher, trainer_command_of_study(study, launcher.name), export=not args.no_export,
                       test_split=test_split, images=args.infer, conf_threshold=args.conf_threshold,
                       timeout_s=args.timeout, devices=devices, emit=emit)
    out = Console(highlight=False)
    if args.json:
        print(json.dumps({**info, "handoff": str(result.folder), "model": str(result.model) if result.model else None,
                          "metrics": result.metrics, "problems": result.problems}, indent=2, default=str))
    else:
        out.print(f"hand-off of trial {trial.number} ({trial.metric}={trial.value:.4f}): {escape(str(result.folder))}")
        if result.metrics:
            m = result.metrics
            out.print(f"test set: mAP {m.get('mAP', 0):.4f}, mAP50 {m.get('mAP50', 0):.4f} on "
                      f"{m.get('num_images')} images")
        if result.per_class:
            table = Table(title="AP per class (test set)")
            for col in ("class", "AP", "AP50", "gt", "det"):
                table.add_column(col)
            for row in result.per_class:
                fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
                table.add_row(escape(str(row.get("name"))), fmt(row.get("ap")), fmt(row.get("ap50")),
                              str(row.get("num_gt")), str(row.get("num_det")))
            out.print(table)
        for label, path in (("model", result.model), ("predictions", result.predictions),
                            ("summary", result.readme)):
            if path:
                out.print(f"{label:12s} {escape(str(path))}")
        if result.pictures:
            out.print(f"{'pictures':12s} {len(result.pictures)} in {escape(str(result.folder / 'pictures'))}")
        for problem in result.problems:
            out.print(f"[red]problem[/] {escape(problem)}")
    return 0 if result.ok else 1
