"""The truth about the deformable-attention paths on a GPU: every path against a float64
arbiter built from finite differences, at DINO-4scale's real shapes.

The arbiter samples each point on its own in float64 (``F.grid_sample`` per level, no sum
over points) and contracts it with a fixed output gradient ``G``, which gives every
point's contribution ``c_p`` to ``L = <out, G>``. Then, elementwise and with no autograd:

* grad of the attention weight of point p = ``c_p / w_p`` (L is linear in w),
* grad of its location = ``(c_p(x + h) - c_p(x - h)) / 2h`` per coordinate (central
  differences; bilinear sampling is quadratic between kinks, so they are exact up to
  rounding when the points keep clear of whole pixels, which ``generic_locations`` does),
* grad of the values: L is linear in them, so float64 autograd of that linear map.

Each path (``fused`` with float32 and bf16 values, ``canvas``, ``per_level``) is compared
elementwise with that: ``max |path - arbiter| / max |arbiter|`` per result. bf16 values are
rounded first and the arbiter sees the same rounded numbers, so what remains is
accumulation order, plus the value gradient's rounding back to bf16.

At a kink (a point on a whole pixel, as every point of a freshly initialised layer is)
the location gradient has two valid answers; the ``kink`` rows count how many of a path's
location gradients equal one of the two one-sided differences.

    python bench/msda_truth.py [--sizes 320,800] [--batches 1,8] [--out results.jsonl]
    TRITON_INTERPRET=1 python bench/msda_truth.py --device cpu --sizes 48 --batches 1 --decoder-queries 70
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dino.models.ms_deform_attn import (  # noqa: E402
    check_tolerance,
    generic_locations,
    ms_deform_attn_core,
)

# (name, strides of the levels, queries of the decoder: 300 matching + 200 denoising)
LAYOUTS = {"dino_4scale_paper": (8, 16, 32, 64), "tao_default": (4, 8, 16, 32)}
DECODER_QUERIES = 500
H_STEP = 1e-3  # pixels; points keep 0.1 pixel clear of kinks


def level_shapes(size: int, strides: tuple[int, ...]) -> list[tuple[int, int]]:
    shapes, side = [], size
    for s in strides:
        side = -(-size // s)
        shapes.append((side, side))
    return shapes


def per_point(value: torch.Tensor, shapes, loc: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """``c'_p = <G_q, sample(value, loc_p)>`` for every point, in float64: ``[B, Lq, nH, L, P]``.

    value ``[B, S, nH, hd]``, loc ``[B, Lq, nH, L, P, 2]``, grad_out ``[B, Lq, nH * hd]``."""
    batch, _, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = loc.shape
    values = value.permute(0, 2, 3, 1).reshape(batch * n_heads, head_dim, -1)
    grids = (2 * loc - 1).permute(0, 2, 3, 1, 4, 5).reshape(batch * n_heads, n_levels, n_queries, n_points, 2)
    g = grad_out.view(batch, n_queries, n_heads, head_dim).permute(0, 2, 3, 1).reshape(batch * n_heads, head_dim,
                                                                                        n_queries, 1)
    parts, start = [], 0
    for level, (h, w) in enumerate(shapes):
        v = values[:, :, start:start + h * w].unflatten(2, (h, w))
        start += h * w
        sampled = F.grid_sample(v, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False)
        parts.append((sampled * g).sum(1))  # [B*nH, Lq, P]
    return torch.stack(parts, 2).view(batch, n_heads, n_queries, n_levels, n_points).permute(0, 2, 1, 3, 4)


def arbiter(value64, shapes, loc, weights64, grad_out64) -> dict[str, torch.Tensor]:
    """Output and the three gradients of ``L = <out, G>`` in float64 (module docstring)."""
    loc64 = loc.double()
    c = per_point(value64, shapes, loc64, grad_out64)
    grad_loc = torch.empty_like(loc64)
    for axis in (0, 1):
        step = torch.zeros_like(loc64)
        step[..., axis] = 1.0
        sizes = torch.tensor([w if axis == 0 else h for h, w in shapes], dtype=torch.float64, device=loc.device)
        h_loc = (H_STEP / sizes).view(1, 1, 1, -1, 1, 1)  # H_STEP pixels of each level
        plus = per_point(value64, shapes, loc64 + step * h_loc, grad_out64)
        minus = per_point(value64, shapes, loc64 - step * h_loc, grad_out64)
        grad_loc[..., axis] = weights64 * (plus - minus) / (2 * h_loc[..., 0])
    v = value64.clone().requires_grad_()
    out = ms_deform_attn_core(v, shapes, loc64, weights64, impl="per_level")
    (out * grad_out64).sum().backward()
    return {"output": out.detach(), "grad value": v.grad, "grad locations": grad_loc, "grad weights": c}


def run_path(impl: str, value, shapes, loc, weights, grad_out) -> dict[str, torch.Tensor]:
    leaves = [t.clone().requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn_core(leaves[0], shapes, leaves[1], leaves[2], impl=impl)
    (out.float() * grad_out).sum().backward()
    return {"output": out.detach(), "grad value": leaves[0].grad, "grad locations": leaves[1].grad,
            "grad weights": leaves[2].grad}


def relative_errors(got: dict, expected: dict) -> dict[str, float]:
    return {k: float((got[k].double() - expected[k]).abs().max() / expected[k].abs().max().clamp_min(1e-12))
            for k in expected}


def kink_agreement(impl: str, value, shapes, weights, grad_out, batch, n_queries, n_heads, n_points) -> dict:
    """Points on whole pixels (pixel centres + whole-pixel offsets, as at initialisation):
    the fraction of location gradients equal to one of the one-sided differences. A point
    on a kink in both coordinates has four: right or left in x, with the cell above or
    below in y (and the same for y)."""
    gen = torch.Generator().manual_seed(3)
    sizes = torch.tensor([(w, h) for h, w in shapes], dtype=torch.float64).view(-1, 1, 2)
    shape = (batch, n_queries, n_heads, len(shapes), n_points, 2)
    pixel = torch.floor(torch.rand(shape, generator=gen, dtype=torch.float64) * (sizes + 2)) - 1
    exact = (pixel + 0.5) / sizes  # float64: exactly on the kinks
    loc = exact.to(value.device, torch.float32)
    got = run_path(impl, value, shapes, loc, weights, grad_out)["grad locations"].double()
    value64, weights64, grad64 = value.double(), weights.double(), grad_out.double()
    # the arbiter differentiates at the exact kink, not at the float32 location: that one
    # lies ~1e-5 px to either side, within the difference step, which would then straddle it
    loc64 = exact.to(value.device)

    def unit(axis: int, pixels: float) -> torch.Tensor:
        step = torch.zeros_like(loc64)
        side = torch.tensor([w if axis == 0 else h for h, w in shapes], dtype=torch.float64, device=loc.device)
        step[..., axis] = 1.0
        return step * (pixels / side).view(1, 1, 1, -1, 1, 1)

    candidates = []
    for axis in (0, 1):
        h = unit(axis, H_STEP)
        h_loc = h[..., axis]
        options = []
        for other in (1e-4, -1e-4):  # which cell of the other coordinate
            base = loc64 + unit(1 - axis, other)
            here = per_point(value64, shapes, base, grad64)
            options.append(weights64 * (per_point(value64, shapes, base + h, grad64) - here) / h_loc)
            options.append(weights64 * (here - per_point(value64, shapes, base - h, grad64)) / h_loc)
        candidates.append(torch.stack(options))
    scale = max(float(c.abs().max()) for c in candidates)
    agree = torch.stack([((got[..., axis] - c).abs().min(0).values <= 1e-3 * max(scale, 1e-12))
                         for axis, c in enumerate(candidates)], -1)
    return {"kink_one_sided_fraction": round(float(agree.float().mean()), 6)}


def cases(sizes: list[int], batches: list[int], layouts: list[str], decoder_queries: int):
    for layout in layouts:
        for size in sizes:
            shapes = level_shapes(size, LAYOUTS[layout])
            tokens = sum(h * w for h, w in shapes)
            for part, n_queries in (("encoder", tokens), ("decoder", decoder_queries)):
                for batch in batches:
                    for spread in ("inside", "beyond"):
                        yield {"layout": layout, "size": size, "part": part, "batch": batch, "spread": spread,
                               "shapes": shapes, "queries": n_queries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="320,800", help="image sides (default 320,800)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"of {list(LAYOUTS)}")
    ap.add_argument("--decoder-queries", type=int, default=DECODER_QUERIES)
    ap.add_argument("--out", help="append JSON lines here")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    n_heads, head_dim, n_points = 8, 32, 4
    rows, failed = [], 0
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    for case in cases(ints(args.sizes), ints(args.batches), args.layouts.split(","), args.decoder_queries):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        shapes, batch, n_queries = case["shapes"], case["batch"], case["queries"]
        tokens = sum(h * w for h, w in shapes)
        value32 = torch.randn(batch, tokens, n_heads, head_dim, device=device)
        weights = torch.rand(batch, n_queries, n_heads, len(shapes), n_points, device=device).softmax(-1)
        grad_out = torch.randn(batch, n_queries, n_heads * head_dim, device=device)
        loc = generic_locations((batch, n_queries, n_heads, len(shapes), n_points, 2), shapes, device,
                                beyond=0 if case["spread"] == "inside" else 2)
        for vdtype in (torch.float32, torch.bfloat16):
            value = value32.to(vdtype)
            truth = arbiter(value.double(), shapes, loc, weights.double(), grad_out.double())
            for impl in ("fused", "canvas", "per_level") if vdtype == torch.float32 else ("fused",):
                got = run_path(impl, value if impl == "fused" else value.float(), shapes, loc, weights, grad_out)
                errors = relative_errors(got, truth)
                ok = all(e <= check_tolerance(k, vdtype) for k, e in errors.items())
                failed += not ok
                row = {**{k: v for k, v in case.items() if k != "shapes"}, "levels": [list(s) for s in shapes],
                       "path": impl, "values": str(vdtype).removeprefix("torch."),
                       **{f"err_{k.replace(' ', '_')}": round(v, 9) for k, v in errors.items()},
                       "pass": ok}
                rows.append(row)
                print(json.dumps(row), flush=True)
        if case["spread"] == "inside" and case["part"] == "decoder":
            for impl in ("fused", "canvas"):
                row = {**{k: v for k, v in case.items() if k != "shapes"}, "path": impl, "values": "float32",
                       "kind": "kink",
                       **kink_agreement(impl, value32, shapes, weights, grad_out, batch, n_queries, n_heads, n_points)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        print(f"# case done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    worst = {}
    for row in rows:
        if "kind" in row:
            continue
        key = (row["path"], row["values"])
        for k, v in row.items():
            if k.startswith("err_"):
                worst[key + (k,)] = max(worst.get(key + (k,), 0.0), v)
    print(f"\n{'path':<10} {'values':<9} {'output':>10} {'grad value':>11} {'grad loc':>10} {'grad w':>10}")
    for path, values in sorted({k[:2] for k in worst}):
        cols = [worst[(path, values, f"err_{n}")] for n in ("output", "grad_value", "grad_locations", "grad_weights")]
        print(f"{path:<10} {values:<9} " + " ".join(f"{c:>10.2e}" for c in cols))
    kinks = [r for r in rows if r.get("kind") == "kink"]
    for path in ("fused", "canvas"):
        fr = [r["kink_one_sided_fraction"] for r in kinks if r["path"] == path]
        if fr:
            print(f"kinks: {path} location gradients equal to a one-sided difference: min fraction {min(fr):.4f}")
    print(f"{len(rows) - len(kinks)} comparisons, {failed} beyond the self-check's tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
