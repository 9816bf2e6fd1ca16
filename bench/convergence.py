"""Convergence from scratch of our DINO-4scale R50 on the anchor task of
``../shared/anchors/hf_convergence.py``: 1000 generated 512x512 shape images of 4
classes (200 for validation), batch 8, AdamW 2e-4, bf16, horizontal flip only,
10 epochs, random init. Runs ``dino train`` (the real CLI) and prints one JSON line
per epoch from its status.json, like the anchor script does.

    python bench/convergence.py --anchors .anchors --out /tmp/conv [--epochs 10]

With ``--anchors`` the images are the anchor's own (its ``shapes_set`` with seeds 1
and 2), written as COCO folders, so both models see identical data; without it our
generator makes a comparable set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl.observe.extractors import get_extractor  # noqa: E402
from automl.observe.monitor import TrialMonitor  # noqa: E402


def write_anchor_data(anchors: Path, out: Path, n_train: int, size: int) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("hf_convergence", anchors / "hf_convergence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from PIL import Image

    dirs = []
    for name, n, seed in (("train", n_train, 1), ("val", 200, 2)):
        folder = out / name
        if not (folder / "annotations.json").exists():
            (folder / "images").mkdir(parents=True, exist_ok=True)
            imgs, coco = mod.shapes_set(n, size, seed)
            for arr, image_id in imgs:
                Image.fromarray(arr).save(folder / "images" / f"{image_id}.png")
            (folder / "annotations.json").write_text(json.dumps(coco))
        dirs.append(folder)
    return dirs[0], dirs[1]


def write_our_data(out: Path, n_train: int, size: int) -> tuple[Path, Path]:
    from dino.data.synth import generate_dataset

    if not (out / "train" / "annotations.json").exists():
        generate_dataset(out_dir=out, num_images=n_train + 200, num_classes=4, image_size=size, seed=0,
                         val_fraction=200 / (n_train + 200), archive=False)
    return out / "train", out / "val"


def bench_spec(train: Path, val: Path, results: Path, epochs: int, size: int, batch: int, workers: int) -> dict:
    template = yaml.safe_load((ROOT / "search_spaces/dino/spec_template_train.yaml").read_text())
    template["results_dir"] = str(results)
    ds = template["dataset"]
    ds["train_data_sources"] = [{"image_dir": str(train / "images"), "json_file": str(train / "annotations.json")}]
    ds["val_data_sources"] = [{"image_dir": str(val / "images"), "json_file": str(val / "annotations.json")}]
    ds.update(num_classes=5, batch_size=batch, workers=workers)
    aug = ds["augmentation"]  # flip only: every resize/crop keeps the 512 px image as it is
    aug.update(scales=[size], train_random_resize=[size], train_random_crop_min=size, train_random_crop_max=size,
               random_resize_max_size=size, test_random_resize=size, horizontal_flip_prob=0.5)
    model = template["model"]
    model.update(backbone="resnet_50", num_feature_levels=4, return_interm_indices=[2, 3, 4])  # DINO-4scale
    train_cfg = template["train"]
    train_cfg.update(num_epochs=epochs, checkpoint_interval=epochs, validation_interval=1, precision="bf16")
    train_cfg["optim"].update(lr=2e-4, lr_steps=[epochs + 1])  # constant rate, as the anchor
    return template


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--anchors", type=Path, help="folder holding hf_convergence.py")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], help="extra dino overrides key=value")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.anchors:
        train, val = write_anchor_data(args.anchors, args.out / "data", args.n_train, args.size)
    else:
        train, val = write_our_data(args.out / "data", args.n_train, args.size)
    print(json.dumps({"data": str(train.parent), "prepared_s": round(time.time() - t0, 1)}), flush=True)
    results = args.out / "results"
    spec = bench_spec(train, val, results, args.epochs, args.size, args.batch, args.workers)
    spec_path = args.out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.time()
    log = open(args.out / "dino_stdout.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dino", "train", "-e", str(spec_path), *args.set],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    # read status.json exactly as the orchestrator does: the tao_status extractor
    monitor = TrialMonitor(results, args.out / "dino_stdout.log", get_extractor("tao_status"))
    seen: set[int] = set()
    while True:
        done = proc.poll() is not None
        for item in monitor.poll() + (monitor.finish() if done else []):
            v = item.values
            if "val_mAP50" in v and item.epoch not in seen:
                seen.add(item.epoch)
                print(json.dumps({"model": "ours_dino_4scale_r50", "epoch": item.epoch + 1,
                                  "train_loss": v.get("train_loss"), "val_mAP": v.get("val_mAP"),
                                  "val_mAP50": v["val_mAP50"], "elapsed_s": round(time.time() - t0, 1)}), flush=True)
        if done:
            break
        time.sleep(2)
    print(json.dumps({"exit_code": proc.returncode, "total_s": round(time.time() - t0, 1)}), flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
