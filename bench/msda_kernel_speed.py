"""Deformable attention alone: the fused Triton kernels against the PyTorch canvas path.

Times forward and forward+backward of ``ms_deform_attn_core`` at the shapes of DINO-4scale
on a batch of 4 at 800x800 (encoder: every one of the 13294 tokens is a query; decoder:
492 queries = 300 matching + 192 denoising), 8 heads of 32 channels, 4 levels, 4 points,
with bf16 and float32 values, and the peak memory of one forward+backward. For the fused
path it also tries a few tile sizes (``BLOCK_Q`` x ``num_warps``).

    python bench/msda_kernel_speed.py [--iters 20] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dino.models import ms_deform_attn_triton as fused_mod  # noqa: E402
from dino.models.ms_deform_attn import ms_deform_attn_core  # noqa: E402

SHAPES = [(100, 100), (50, 50), (25, 25), (13, 13)]  # strides 8..64 of 800x800
CASES = {"encoder": sum(h * w for h, w in SHAPES), "decoder": 492}


def inputs(n_queries: int, dtype: torch.dtype, device: torch.device, batch: int = 4, heads: int = 8, head_dim: int = 32,
           points: int = 4):
    gen = torch.Generator(device).manual_seed(0)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, head_dim, device=device, generator=gen).to(dtype)
    loc = torch.rand(batch, n_queries, heads, len(SHAPES), points, 2, device=device, generator=gen)
    weights = torch.rand(batch, n_queries, heads, len(SHAPES), points, device=device, generator=gen).softmax(-1)
    return value, loc, weights


def timed(fn, iters: int) -> float:
    """Mean milliseconds of ``fn`` after 3 warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e3


def measure(impl: str, case: str, dtype: torch.dtype, iters: int) -> dict:
    device = torch.device("cuda")
    value, loc, weights = inputs(CASES[case], dtype, device)
    leaves = [t.requires_grad_() for t in (value, loc, weights)]

    def forward():
        with torch.no_grad():
            ms_deform_attn_core(value, SHAPES, loc, weights, impl=impl)

    def forward_backward():
        out = ms_deform_attn_core(*leaves[:1], SHAPES, *leaves[1:], impl=impl)
        out.sum().backward()
        for t in leaves:
            t.grad = None

    fwd = timed(forward, iters)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    both = timed(forward_backward, iters)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return {"impl": impl, "case": case, "queries": CASES[case], "dtype": str(dtype).removeprefix("torch."),
            "fwd_ms": round(fwd, 3), "fwd_bwd_ms": round(both, 3), "peak_extra_gib": round(peak, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", help="also append the JSON lines here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps({"device": torch.cuda.get_device_name(), **row}) + "\n")

    for case in CASES:
        for dtype in (torch.bfloat16, torch.float32):
            emit(measure("canvas", case, dtype, args.iters))
            for block, warps in ((32, 2), (64, 4), (128, 4), (64, 8)):
                fused_mod.BLOCK_Q, fused_mod.NUM_WARPS = block, warps
                emit({**measure("fused", case, dtype, args.iters), "block_q": block, "num_warps": warps})
    print(f"\n{'impl':<22} {'case':<8} {'dtype':<9} {'fwd ms':>8} {'fwd+bwd ms':>10} {'peak GiB':>9}")
    for r in rows:
        label = r["impl"] + (f" {r['block_q']}x{r['num_warps']}w" if "block_q" in r else "")
        print(f"{label:<22} {r['case']:<8} {r['dtype']:<9} {r['fwd_ms']:>8} {r['fwd_bwd_ms']:>10} "
              f"{r['peak_extra_gib']:>9}")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
