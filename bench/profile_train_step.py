"""Where a training step of our DINO-4scale R50 spends its time on the GPU.

torch.profiler over a few steps (batch 4, 800x800, bf16 by default): the top operators
by device time and by host time, and how often the host waited for the device.

    python bench/profile_train_step.py [--dtype fp32] [--steps 5] [--rows 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_speed import OUR_CONFIGS, OurDino, make_batch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--config", default="dino_4scale_r50")
    args = ap.parse_args()
    device = torch.device("cuda")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    adapter = OurDino(OUR_CONFIGS[args.config], device)
    opt = torch.optim.AdamW(adapter.model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    images, targets = make_batch(4, args.size, device, gen)

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            with record_function("forward+loss"):
                loss = adapter.loss(images, targets)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages()
    print(table.table(sort_by="cuda_time_total", row_limit=args.rows))
    print(table.table(sort_by="cpu_time_total", row_limit=args.rows))
    syncs = [e for e in table if "synchronize" in e.key.lower() or e.key in ("aten::item", "aten::_local_scalar_dense", "aten::nonzero")]
    for e in syncs:
        print(f"host waits: {e.key} x{e.count // args.steps}/step, {e.cpu_time_total / args.steps / 1e3:.1f} ms/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
