"""Training throughput of one ``dino train`` run per GPU count (1 vs 2 GPUs by default):
DINO-4scale R50 of ``bench/convergence.py`` (300 queries, 100 denoising queries), batch 8
per GPU (TAO semantics: the global batch grows with the GPUs), bf16, 512 px generated
shape images, through the real CLI (``train.num_gpus`` / ``train.gpu_ids``).

    python bench/ddp_speed.py --out /tmp/ddp_speed [--gpus 1,2] [--n-train 800] [--epochs 3]

Each run trains ``--epochs`` epochs of ``n_train / (8 * gpus)`` steps. Images/s come from
the epoch lines of its status.json (``time_per_step``: the training loop only, data loading
included, validation and checkpoint writes excluded), first epoch left out as warm-up.
Prints one JSON line per run and a table; ``--tiny`` runs the CPU test model instead
(gloo processes) to check the script itself on a machine without GPUs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convergence import bench_spec, write_our_data  # noqa: E402

from dino.status_log import read_status  # noqa: E402


def seconds(text: str) -> float:
    """``str(timedelta)`` -> seconds (``H:MM:SS[.ffffff]``)."""
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def tiny(spec: dict, size: int) -> dict:
    """The CPU test model (tests/trainer/dino_test_utils.py) in place of R50."""
    sys.path.insert(0, str(ROOT / "tests" / "trainer"))
    from dino_test_utils import TINY_MODEL

    spec["model"].update(TINY_MODEL)
    spec["train"]["precision"] = "fp32"
    spec["dataset"]["pin_memory"] = False
    return spec


def run_one(spec_path: Path, out: Path, gpus: int, batch: int, warmup: int) -> dict:
    results = out / f"results_{gpus}gpu"
    overrides = [f"results_dir={results}", f"train.num_gpus={gpus}", f"train.gpu_ids={list(range(gpus))}"]
    began = time.time()
    with open(out / f"stdout_{gpus}gpu.log", "w") as log:
        code = subprocess.call([sys.executable, "-m", "dino", "train", "-e", str(spec_path), *overrides],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.time() - began
    epochs = [line for line in read_status(str(results / "train" / "status.json")) if "epoch" in line]
    timed = epochs[warmup:] or epochs
    per_step = sum(seconds(e["time_per_step"]) for e in timed) / max(len(timed), 1)
    steps = epochs[0]["max_step"] // max(epochs[0]["max_epoch"] + 1, 1) if epochs else 0
    return {"gpus": gpus, "exit_code": code, "batch_per_gpu": batch, "global_batch": batch * gpus,
            "steps_per_epoch": steps, "epochs_timed": len(timed), "time_per_step_s": round(per_step, 4),
            "images_per_s": round(batch * gpus / per_step, 2) if per_step else None, "wall_s": round(wall, 1),
            "last_kpi": epochs[-1].get("kpi") if epochs else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gpus", default="1,2", help="comma-separated GPU counts, one run each")
    ap.add_argument("--n-train", type=int, default=800, help="training images (steps per epoch = n / (batch x gpus))")
    ap.add_argument("--epochs", type=int, default=3, help="the first is warm-up and not timed")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8, help="per GPU")
    ap.add_argument("--workers", type=int, default=6, help="loader workers per GPU process")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--tiny", action="store_true", help="CPU test model (checks the script without GPUs)")
    args = ap.parse_args()
    counts = [int(g) for g in args.gpus.split(",")]
    import torch

    if not args.tiny and torch.cuda.device_count() < max(counts):
        print(f"error: {max(counts)} GPUs needed, {torch.cuda.device_count()} visible", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train, val = write_our_data(args.out / "data", args.n_train, args.size)
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(json.dumps({"data": str(train.parent), "prepared_s": round(time.time() - t0, 1), "devices": devices,
                      "torch": torch.__version__}), flush=True)
    spec = bench_spec(train, val, args.out / "results", args.epochs, args.size, args.batch, args.workers)
    spec["train"].update(precision=args.precision, validation_interval=args.epochs)  # validate once, at the end
    if args.tiny:
        spec = tiny(spec, args.size)
    spec_path = args.out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    rows = []
    for gpus in counts:
        row = run_one(spec_path, args.out, gpus, args.batch, warmup=1)
        row.update(model="tiny_cpu" if args.tiny else "dino_4scale_r50", precision=spec["train"]["precision"],
                   size=args.size, device=devices[0] if devices and not args.tiny else "cpu")
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r["images_per_s"] for r in rows if r["gpus"] == 1 and r["images_per_s"]), None)
    print(f"\n{'gpus':>4} {'global batch':>12} {'steps/epoch':>11} {'s/step':>8} {'img/s':>8} {'speed-up':>8} "
          f"{'efficiency':>10}  exit")
    for r in rows:
        up = r["images_per_s"] / base if base and r["images_per_s"] else None
        speedup, efficiency = (f"{up:.2f}x", f"{up / r['gpus']:.0%}") if up else ("-", "-")
        print(f"{r['gpus']:>4} {r['global_batch']:>12} {r['steps_per_epoch']:>11} {r['time_per_step_s']:>8} "
              f"{r['images_per_s'] or '-':>8} {speedup:>8} {efficiency:>10}  {r['exit_code']}")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
