"""``dino`` command line: ``train``, ``evaluate``, ``inference``, ``export`` (TAO style), ``synth`` (dataset generator)
and ``warm`` (a trainer started ahead of its job, ``dino.warm``).

``dino train -e spec.yaml [key.sub=value ...]``. Exit codes: 0 success, 1 failure while
running, 2 bad input (spec, data, paths; reported before any training step), 128+N when
stopped by signal N (143 for SIGTERM). Every failure also appends a FAILURE line with the
message to the task's ``status.json`` whenever its folder can be worked out.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from dino.config import SpecError, load_spec, parse_override, read_yaml
from dino.data.coco import DataError
from dino.status_log import StatusLog

EXIT_FAILURE, EXIT_BAD_INPUT = 1, 2


def _status_path(task: str, spec_path: str, overrides: list[str]) -> str | None:
    """Best guess of ``<task dir>/status.json`` even when the spec does not load, so that
    the FAILURE line of a broken spec lands where the orchestrator looks."""
    values: dict[str, object] = {}
    try:
        raw = read_yaml(spec_path)
        values["results_dir"] = raw.get("results_dir")
        values[f"{task}.results_dir"] = (raw.get(task) or {}).get("results_dir") if isinstance(raw.get(task), dict) else None
    except SpecError:
        pass
    for item in overrides:
        try:
            parts, value = parse_override(item)
        except SpecError:
            continue
        values[".".join(parts)] = value
    own, root = values.get(f"{task}.results_dir"), values.get("results_dir")
    if isinstance(own, str) and own:
        return os.path.join(own, "status.json")
    if isinstance(root, str) and root:
        return os.path.join(root, task, "status.json")
    return None


def _run_task(task: str, args: argparse.Namespace) -> int:
    from dino.ddp_launch import WorkerFailed
    from dino.distributed import NullStatusLog, is_secondary_rank
    from dino.runtime import Interrupted

    path = _status_path(task, args.experiment_spec, args.overrides)
    try:  # under torchrun, rank 0 alone writes status lines
        status = (NullStatusLog() if is_secondary_rank() else StatusLog(path)) if path else None
    except OSError as exc:
        print(f"error: cannot create the results folder for {path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if status:
        status.write(f"Starting DINO {task}.", status="STARTED")
    try:
        spec, ignored = load_spec(args.experiment_spec, args.overrides)
        if status is None:  # load_spec accepted a spec _status_path could not read: it has no results_dir
            raise SpecError("results_dir is empty: pass results_dir=/path/to/results")
        if task == "train":
            from dino.train import run_training

            run_training(spec, ignored, status)
        elif task == "evaluate":
            from dino.evaluate import run_evaluation

            run_evaluation(spec, ignored, status)
        elif task == "inference":
            from dino.inference import run_inference

            run_inference(spec, ignored, status)
        else:
            from dino.export import run_export

            run_export(spec, ignored, status)
    except (SpecError, DataError) as exc:
        return _fail(status, str(exc), EXIT_BAD_INPUT)
    except Interrupted as exc:  # a stop, not an error: one plain line (the status log still says FAILURE)
        again = "resume from the latest checkpoint" if task == "train" else "start it again"
        return _fail(status, f"{task.capitalize()} {exc}; rerun the same command to {again}", 128 + exc.signum,
                     prefix="")
    except KeyboardInterrupt:
        return _fail(status, f"{task.capitalize()} interrupted", 130)
    except WorkerFailed as exc:  # a DDP rank's error; the rank printed its traceback
        return _fail(status, str(exc), EXIT_FAILURE)
    except Exception as exc:  # anything else is a failure of the run, reported with its traceback
        traceback.print_exc()
        return _fail(status, f"{type(exc).__name__}: {exc}", EXIT_FAILURE)
    if status:
        status.write(f"{task.capitalize()} finished successfully.", status="SUCCESS")
    return 0


def _fail(status: StatusLog | None, message: str, code: int, prefix: str = "error: ") -> int:
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    if status:
        try:
            status.write(message, status="FAILURE", verbosity="ERROR")
        except OSError as exc:
            print(f"error: cannot write {status.path}: {exc}", file=sys.stderr)
    return code


def _synth(args: argparse.Namespace) -> int:
    from dino.data.synth import generate_dataset

    try:
        paths = generate_dataset(args.out, args.num_images, args.num_classes, args.size, args.seed, args.val_fraction,
                                 args.archive, objects=(args.min_objects, args.max_objects),
                                 object_size=(args.min_object_frac, args.max_object_frac))
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for name, split in (("train", paths.train), ("val", paths.val)):
        if split:
            extra = f"  archive={split.archive}" if split.archive else ""
            print(f"{name}: {split.num_images} images  image_dir={split.image_dir}  json_file={split.json_file}{extra}")
    print("categories: " + ", ".join(f"{c['id']}={c['name']}" for c in paths.categories))
    print(f"set dataset.num_classes={len(paths.categories) + 1} (category ids are 1..{len(paths.categories)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dino", description="The bundled DINO trainer (TAO-compatible CLI).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for task, text in (("train", "train a DINO model"), ("evaluate", "COCO mAP of a checkpoint, overall and per class"),
                       ("inference", "a checkpoint's detections on images: COCO results JSON and drawn images"),
                       ("export", "write an ONNX file from a checkpoint")):
        p = sub.add_parser(task, help=text, description=f"{text}. Overrides are dotted key=value, values in YAML.")
        p.add_argument("-e", "--experiment_spec", "--experiment-spec", required=True, help="spec YAML (TAO DINO format)")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. results_dir=/r train.num_epochs=2")
        p.set_defaults(func=lambda a, t=task: _run_task(t, a))
    p = sub.add_parser("synth", help="generate a COCO shapes dataset",
                       description="Write <out>/train and <out>/val (images/ + annotations.json, optionally images.tar.gz).")
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--archive", action="store_true", help="also write images.tar.gz per split (TAO artifact)")
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--max-objects", type=int, default=6)
    p.add_argument("--min-object-frac", type=float, default=1 / 16, help="smallest object side / image side")
    p.add_argument("--max-object-frac", type=float, default=1 / 3, help="largest object side / image side")
    p.set_defaults(func=_synth)
    p = sub.add_parser("warm", help="(for orchestrators) start ahead of a train job, then become it",
                       description="Import the trainer and warm its device up with one step of the --like spec's "
                                   "model, print 'dino-warm: ready', then read the job as one JSON line on stdin "
                                   "and run it (dino.warm has the protocol).")
    p.add_argument("--like", required=True, metavar="SPEC", help="a spec like the coming job's (model, precision)")
    p.set_defaults(func=lambda a: _warm(a.like))
    return parser


def _warm(spec_path: str) -> int:
    from dino.warm import serve

    return serve(spec_path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
