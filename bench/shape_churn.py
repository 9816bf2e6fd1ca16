"""What a new batch shape costs a training step on the GPU: the smoke profile's real loader
(multi-scale, 320 px, batch 8, bf16, R50 DINO-4scale), its batches padded three ways.

* ``batch``: each batch padded to its largest image (the trainer before padding to a
  multiple; the smoke's loader gives 51 distinct shapes in 60 batches);
* ``multiple``: rounded up to ``dino.data.loader.GPU_PAD_MULTIPLE`` (the trainer on GPUs now);
* ``fixed``: every batch padded to one shape (the largest the augmentation can make).

Each mode runs in a fresh process (cuDNN's per-shape plans and every other per-shape cache
start empty, as in a trial) for ``--epochs`` epochs; ms per step (data loading included,
4 workers) and the distinct shapes are reported per epoch.

    python bench/shape_churn.py --out DIR            # device: all three modes, table + JSON
    python bench/shape_churn.py --out DIR --profile 6   # also: the loader wait per step, and
        # torch.profiler over 6 steps of the first epoch (after 10), top operators in DIR/profile_MODE.txt
    python bench/shape_churn.py --device cpu --images 48 --epochs 1 --out DIR \
        --set model.backbone=resnet_tiny --set model.hidden_dim=64 --set model.nheads=4   # a smoke check here
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("batch", "multiple", "fixed")


def one_mode(args) -> dict:
    import torch
    import yaml

    from dino.config import load_spec
    from dino.data import build_dataset, train_loader
    from dino.data.loader import GPU_PAD_MULTIPLE
    from dino.engine import autocast, to_device, to_fp32
    from dino.models import build_dino
    from dino.optim import build_optimizer, plan_learning_rates

    profile = yaml.safe_load((ROOT / "automl" / "profiles" / "smoke.yaml").read_text())
    fixed = {k: v for k, v in profile["fixed"].items() if k.split(".")[0] in ("dataset", "model", "train")}
    data = Path(args.data)
    overrides = [f"{k}={json.dumps(v)}" for k, v in fixed.items()] + [
        f"dataset.train_data_sources=[{{image_dir: {data}/train/images, json_file: {data}/train/annotations.json}}]",
        f"dataset.val_data_sources=[{{image_dir: {data}/val/images, json_file: {data}/val/annotations.json}}]",
        f"results_dir={args.out}/{args.mode}"]
    if args.device == "cpu":
        overrides += ["train.precision=fp32", "dataset.workers=0"]
    overrides += args.set or []
    spec, _ = load_spec(None, overrides)
    d, t = spec.dataset, spec.train
    device = torch.device(args.device)
    torch.manual_seed(0)
    ds = build_dataset(d.train_data_sources, d, True, "dataset.train_data_sources")
    model, criterion, _ = build_dino(spec.model, d.num_classes)
    model.to(device).train()
    criterion.to(device).train()
    optimizer = build_optimizer(model, spec.model, t.optim, plan_learning_rates(t.optim, True))
    side = max(d.augmentation.random_resize_max_size, max(d.augmentation.scales))
    epochs = []
    for epoch in range(args.epochs):
        loader = train_loader(ds, d, t.seed, epoch, pin=device.type == "cuda",
                              multiple=GPU_PAD_MULTIPLE if args.mode == "multiple" else 1)
        shapes, steps, began, waited = set(), 0, time.perf_counter(), 0.0
        batches = iter(loader)
        prof = None
        while True:
            asked = time.perf_counter()
            try:
                images, masks, targets = next(batches)
            except StopIteration:
                break
            waited += time.perf_counter() - asked
            if args.profile and epoch == 0 and steps == 10:
                from torch.profiler import ProfilerActivity, profile

                torch.cuda.synchronize(device) if device.type == "cuda" else None
                prof = profile(activities=[ProfilerActivity.CPU]
                               + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))
                prof.__enter__()
                prof_began = time.perf_counter()
            if args.mode == "fixed":  # pad to one canvas; padding is masked
                canvas = images.new_zeros((*images.shape[:2], side, side))
                canvas[..., : images.shape[2], : images.shape[3]] = images
                pad = torch.ones((images.shape[0], side, side), dtype=torch.bool)
                pad[:, : masks.shape[1], : masks.shape[2]] = masks
                images, masks = canvas, pad
            shapes.add(tuple(images.shape[2:]))
            images, masks, targets = to_device(images, masks, targets, device)
            with autocast(device, t.precision):
                outputs = model(images, masks, targets)
            loss = criterion(to_fp32(outputs), targets)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if prof is not None and steps == 10 + args.profile:
                torch.cuda.synchronize(device) if device.type == "cuda" else None
                wall = time.perf_counter() - prof_began
                prof.__exit__(None, None, None)
                _write_profile(prof, wall, args)
                prof = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
        epochs.append({"epoch": epoch, "steps": steps, "ms_per_step": round(1000 * seconds / max(steps, 1), 1),
                       "loader_wait_ms_per_step": round(1000 * waited / max(steps, 1), 1),
                       "img_s": round(steps * d.batch_size / seconds, 2), "distinct_shapes": len(shapes),
                       "largest": max(shapes, key=lambda hw: hw[0] * hw[1]) if shapes else None})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"mode": args.mode, "device": name, "torch": torch.__version__, "epochs": epochs}


def _write_profile(prof, wall: float, args) -> None:
    """The profiled steps' top operators by device and by host time, and the device's
    kernel time per step against the wall time per step (how busy one trial keeps the GPU)."""
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events)
    head = (f"{args.profile} steps, wall {1000 * wall / args.profile:.1f} ms/step, device kernels "
            f"{device_us / 1000 / args.profile:.1f} ms/step\n")
    text = head + events.table(sort_by="self_device_time_total", row_limit=30) + "\n"
    text += events.table(sort_by="self_cpu_time_total", row_limit=30)
    Path(args.out, f"profile_{args.mode}.txt").write_text(text)
    print(head, file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=600, help="generated images, as the smoke profile's")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="spec overrides after the smoke's (CPU check)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="profile this many steps of the first epoch (after 10 unprofiled)")
    ap.add_argument("--modes", default=",".join(MODES), help="which paddings (comma-separated)")
    ap.add_argument("--mode", choices=MODES, help="one mode in this process (the parent runs each so)")
    ap.add_argument("--data", help="(with --mode) the generated dataset")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mode:
        print(json.dumps(one_mode(args)), flush=True)
        return 0
    data = out / "data"
    if not (data / "train").exists():
        subprocess.run([sys.executable, "-m", "dino", "synth", "--out", str(data), "--num-images", str(args.images),
                        "--num-classes", "4", "--size", "320", "--val-fraction", "0.2"], check=True,
                       stdout=subprocess.DEVNULL)
    rows = []
    for mode in args.modes.split(","):
        sets = [f"--set={item}" for item in args.set or []]
        proc = subprocess.run([sys.executable, __file__, "--out", str(out), "--device", args.device, "--epochs",
                               str(args.epochs), "--mode", mode, "--data", str(data), "--profile", str(args.profile),
                               *sets], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    (out / "shape_churn.json").write_text(json.dumps(rows, indent=1))
    lines = [f"# Shape churn: the smoke's training loader, three paddings ({rows[0]['device']}, torch {rows[0]['torch']})",
             "", f"`python bench/shape_churn.py --out DIR --epochs {args.epochs}`", "",
             "| padding | epoch | steps | ms/step | loader wait ms/step | img/s | distinct shapes | largest |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for e in row["epochs"]:
            lines.append(f"| {row['mode']} | {e['epoch']} | {e['steps']} | {e['ms_per_step']} | "
                         f"{e['loader_wait_ms_per_step']} | {e['img_s']} | "
                         f"{e['distinct_shapes']} | {e['largest']} |")
    text = "\n".join(lines) + "\n"
    (out / "shape_churn.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
