"""What channels-last convolutions would save in a training step: the ResNet-50 body alone.

The 800 px profile (``bench/runs/2026-12-04-h200/profile``) shows cuDNN's NCHW<->NHWC
transposes, 2.4 ms of a 100 ms step, beside 5.9 ms of batch-norm backward. This times the
backbone's forward and backward at batch 4, 800x800, bf16 autocast, with the model's
trainable batch norm and the trainer's default cuDNN settings, in both memory formats, so the gain is known before the model
changes format.

    python3 bench/channels_last_probe.py [--size 800 --batch 4 --iters 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dino.models.resnet import StageOutputs, build_resnet  # noqa: E402


def step_ms(channels_last: bool, size: int, batch: int, iters: int) -> float:
    torch.manual_seed(0)
    body = StageOutputs(build_resnet("resnet_50"), {"layer2": "0", "layer3": "1", "layer4": "2"}).cuda().train()
    images = torch.randn(batch, 3, size, size, device="cuda")
    if channels_last:
        body = body.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    for i in range(iters + 5):
        if i == 5:
            torch.cuda.synchronize()
            began = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = body(images)
        sum(f.float().mean() for f in out.values()).backward()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - began) / iters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    rows = {fmt: round(step_ms(fmt == "channels_last", args.size, args.batch, args.iters), 2)
            for fmt in ("contiguous", "channels_last", "contiguous again")}
    print(json.dumps({"backbone": "resnet_50", "size": args.size, "batch": args.batch, "ms_per_step": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
