"""Sweep the CPU smoke study's settings through the product's own path.

Each grid point is one enqueued trial of a real study (the smoke profile's ``cpu:``
variant, pruning off, the local launcher, this machine's cores), so what is measured is
what ``automl run --profile smoke`` runs. Prints one row per trial: the parameters, the
val_mAP50 of every epoch and the wall time; ``--out`` also writes the rows as JSON.

    .venv/bin/python bench/cpu_smoke_sweep.py --grid train.optim.lr=1e-3,2e-3,4e-3 \
        --synth num_images=200 --fixed train.num_epochs=10
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from rich.console import Console

from automl.config import build_run_config, read_profile
from automl.config.loader import deep_merge
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard


def _pairs(items: list[str]) -> dict[str, object]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="append", default=[], metavar="PARAM=V1,V2",
                    help="a searched parameter and its values; several --grid make a product")
    ap.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE", help="data.synth override")
    ap.add_argument("--fixed", action="append", default=[], metavar="KEY=VALUE", help="fixed spec value")
    ap.add_argument("--params", action="append", default=[], metavar="KEY=VALUE",
                    help="a searched parameter set to one value in every trial")
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()

    grid = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())] or [{}]

    smoke = read_profile("smoke")
    raw = deep_merge(smoke, smoke["cpu"])
    raw.pop("cpu")
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="cpu_sweep_"))
    raw = deep_merge(raw, {
        "study": {"name": "cpu-sweep"},
        "pruner": {"name": "none"},
        "budget": {"n_trials": len(points), "max_consecutive_failures": len(points)},
        "devices": "cpu",
        "workspace": str(workspace),
        "data": {"synth": _pairs(args.synth)},
        "fixed": _pairs(args.fixed),
    })
    cfg = build_run_config(raw, use_cpu_variant=False, where="cpu_smoke_sweep")
    study = open_study(cfg)
    # the searched values every point shares: the space's defaults, then --params
    space_defaults = {"train.optim.lr_linear_proj_mult": 0.1, "train.optim.weight_decay": 1e-4,
                      "model.dn_box_noise_scale": 0.4, "dataset.augmentation.horizontal_flip_prob": 0.5,
                      "train.optim.lr_backbone": 1e-3, "train.optim.lr": 2e-3}
    for point in points:
        study.enqueue_trial({**space_defaults, **_pairs(args.params), **point})
    started = time.monotonic()
    run_study(cfg, ProgressBoard(Console(file=sys.stderr)))
    total = time.monotonic() - started

    rows = []
    study = optuna.load_study(study_name="cpu-sweep", storage=cfg.storage_url)
    for t in study.trials:
        curve = [round(t.intermediate_values[k], 3) for k in sorted(t.intermediate_values)]
        wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"trial": t.number, "params": {k: t.params.get(k) for k in grid} or t.params,
                     "state": t.state.name, "best": max(curve) if curve else None, "curve": curve, "wall_s": wall})
    print(f"# synth {_pairs(args.synth)} fixed {_pairs(args.fixed)} params {_pairs(args.params)}; "
          f"{len(points)} trials in {total:.0f} s on {os.cpu_count()} cores")
    for r in rows:
        print(f"{r['trial']:>3} {json.dumps(r['params'])} {r['state']} best={r['best']} "
              f"wall={r['wall_s']:.0f}s curve={r['curve']}")
    if args.out:
        args.out.write_text(json.dumps({"synth": _pairs(args.synth), "fixed": _pairs(args.fixed), "rows": rows,
                                        "total_s": total}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
