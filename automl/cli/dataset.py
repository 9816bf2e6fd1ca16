"""``automl dataset synth | check | stage``: make, check and stage dataset splits."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from automl.errors import DatasetError
from dino.data.synth import OBJECT_SIZE, OBJECTS, generate_dataset


def _int_list(text: str) -> list[int]:
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1, got {text!r}") from None


def _add_s3_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="staging cache folder (default: $AUTOML_DATA_CACHE or ~/.cache/automl/datasets)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
    p.add_argument("--region", default=None, help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: for big transfers and header scans of large splits)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dataset", help="generate, check or stage a COCO dataset")
    commands = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    commands.required = True

    synth = commands.add_parser("synth", help="generate a small synthetic COCO dataset (train/ and val/)")
    synth.add_argument("--out", type=Path, required=True, help="output folder; gets train/ and val/")
    synth.add_argument("--num-images", type=int, default=100)
    synth.add_argument("--num-classes", type=int, default=4)
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--val-fraction", type=float, default=0.2)
    synth.add_argument("--archive", action="store_true", help="also write images.tar.gz (the TAO artifact) per split")
    synth.add_argument("--objects", type=int, nargs=2, default=OBJECTS, metavar=("MIN", "MAX"),
                       help=f"objects per image (default {OBJECTS[0]} {OBJECTS[1]})")
    synth.add_argument("--object-size", type=float, nargs=2, default=OBJECT_SIZE, metavar=("MIN", "MAX"),
                       help=f"an object's side as a fraction of --size (default {OBJECT_SIZE[0]:.3g} {OBJECT_SIZE[1]:.3g})")
    synth.add_argument("--class-colours", action="store_true",
                       help="each class also in its own hue (the CPU smoke study's easier task)")
    synth.set_defaults(func=cmd_synth)

    check = commands.add_parser("check", help="preflight a dataset (and spec values); exit 1 on errors")
    check.add_argument("--train", required=True, help="training source: folder, images archive or s3://bucket/prefix")
    check.add_argument("--val", default=None, help="validation source (default: reuse the training source, with a warning)")
    check.add_argument("--spec", type=Path, default=None, help="train spec YAML to read the settings below from")
    check.add_argument("--num-classes", type=int, default=None, help="dataset.num_classes")
    check.add_argument("--batch-size", type=int, default=None, help="dataset.batch_size")
    check.add_argument("--num-gpus", type=int, default=None, help="train.num_gpus")
    check.add_argument("--gpu-ids", type=_int_list, default=None, help="train.gpu_ids, e.g. 0,1")
    check.add_argument("--num-queries", type=int, default=None, help="model.num_queries")
    check.add_argument("--num-select", type=int, default=None, help="model.num_select")
    check.add_argument("--num-feature-levels", type=int, default=None, help="model.num_feature_levels")
    check.add_argument("--return-interm-indices", type=_int_list, default=None, help="model.return_interm_indices, e.g. 1,2,3,4")
    check.add_argument("--sample-limit", type=int, default=500, help="decode at most this many images per split (every header is read)")
    check.add_argument("--strict", action="store_true",
                       help="every data-policy fix (zero-area or clipped boxes, rescaled sizes, EXIF rotation) is an error")
    _add_s3_flags(check)
    check.set_defaults(func=cmd_check)

    stage = commands.add_parser("stage", help="download/extract a source into the cache and print the staged paths")
    stage.add_argument("source", help="folder, images archive or s3://bucket/prefix")
    _add_s3_flags(stage)
    stage.set_defaults(func=cmd_stage)


def _client(args: argparse.Namespace):
    if args.endpoint_url is None and args.region is None:
        return None  # built lazily from the environment, only if an S3 source is staged
    from automl.datasets import make_s3_client

    return make_s3_client(endpoint_url=args.endpoint_url, region=args.region)


def cmd_synth(args: argparse.Namespace) -> int:
    try:
        paths = generate_dataset(
            out_dir=str(args.out),
            num_images=args.num_images,
            num_classes=args.num_classes,
            image_size=args.size,
            seed=args.seed,
            val_fraction=args.val_fraction,
            archive=args.archive,
            objects=tuple(args.objects),
            object_size=tuple(args.object_size),
            class_colours=args.class_colours,
        )
    except (ValueError, FileExistsError) as exc:
        raise DatasetError(f"automl dataset synth: {exc}") from exc
    for name, split in (("train", paths.train), ("val", paths.val)):
        if split is None:
            continue
        print(f"{name}: {split.num_images} images in {split.image_dir}, annotations {split.json_file}")
        if split.archive:
            print(f"{'':{len(name) + 2}}archive {split.archive}")
    print(f"num_classes to use: {len(paths.categories) + 1} (category ids 1..{len(paths.categories)})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from automl.datasets import SpecFacts, has_errors, load_spec_facts, preflight, stage_sources
    from automl.ui.findings import render_findings

    facts = load_spec_facts(args.spec) if args.spec else SpecFacts()
    facts = facts.replace(
        num_classes=args.num_classes,
        batch_size=args.batch_size,
        num_gpus=args.num_gpus,
        gpu_ids=args.gpu_ids,
        num_queries=args.num_queries,
        num_select=args.num_select,
        num_feature_levels=args.num_feature_levels,
        return_interm_indices=args.return_interm_indices,
    )
    staged = stage_sources(args.train, args.val, args.cache, client=_client(args), progress=args.progress)
    console = Console()
    console.print(Text(f"train: images {staged.train.image_dir}\n       annotations {staged.train.json_file}"))
    if not staged.val_is_train:
        console.print(Text(f"val:   images {staged.val.image_dir}\n       annotations {staged.val.json_file}"))
    with _scan_progress(args.progress) as progress:
        findings = preflight(staged.train, staged.val, facts, sample_limit=args.sample_limit, strict=args.strict,
                             progress=progress)
    render_findings(findings, console)
    return 1 if has_errors(findings) else 0


SCAN_PROGRESS_MIN = 2000  # images in a split before its header scan gets a bar


@contextlib.contextmanager
def _scan_progress(enabled: bool | None) -> Iterator[Callable[[str, int, int], None]]:
    """``update(split, done, total)`` drawing a bar on stderr per split (None: only for
    splits of at least SCAN_PROGRESS_MIN images)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def update(split: str, done: int, total: int) -> None:
        if enabled is False or (enabled is None and total < SCAN_PROGRESS_MIN):
            return
        if split not in tasks:
            if not tasks:
                bar.start()
            tasks[split] = bar.add_task(f"{split}: reading image headers", total=total)
        bar.update(tasks[split], completed=done)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def cmd_stage(args: argparse.Namespace) -> int:
    from automl.datasets import stage

    staged = stage(args.source, args.cache, client=_client(args), progress=args.progress)
    print(f"image_dir: {staged.image_dir}")
    print(f"json_file: {staged.json_file}")
    return 0
