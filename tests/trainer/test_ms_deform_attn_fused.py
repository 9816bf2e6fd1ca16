"""The fused Triton deformable attention against the PyTorch path, values and gradients.

CI has no GPU, so the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), which
executes the very same kernel code on the CPU. The interpreter must be chosen before the
kernels are defined, hence a subprocess running this file's ``__main__`` block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CASES = [
    # shapes, (B, Lq, nH, hd, P), value dtype, spread of the locations around [0, 1]
    {"shapes": [[6, 7], [3, 4], [2, 2], [1, 1]], "dims": [2, 70, 2, 8, 3], "dtype": "float32", "spread": 1.4},
    {"shapes": [[5, 3], [2, 6]], "dims": [1, 9, 3, 6, 2], "dtype": "float32", "spread": 6.0},  # hd not 2^k
    {"shapes": [[4, 4], [2, 2], [1, 1]], "dims": [2, 33, 2, 16, 4], "dtype": "bfloat16", "spread": 1.2},
]


def _compare(case: dict) -> dict:
    import torch

    from dino.models.ms_deform_attn import ms_deform_attn_core

    torch.manual_seed(0)
    shapes = [tuple(s) for s in case["shapes"]]
    batch, n_queries, n_heads, head_dim, n_points = case["dims"]
    tokens = sum(h * w for h, w in shapes)
    dtype = getattr(torch, case["dtype"])
    value = torch.randn(batch, tokens, n_heads, head_dim).to(dtype)
    spread = case["spread"]
    loc = torch.rand(batch, n_queries, n_heads, len(shapes), n_points, 2) * spread - (spread - 1) / 2
    weights = torch.rand(batch, n_queries, n_heads, len(shapes), n_points).softmax(-1)
    results = {}
    for impl in ("per_level", "fused"):
        v, lo, w = (t.clone().requires_grad_() for t in (value, loc, weights))
        # the reference samples the same (rounded) values in float32
        out = ms_deform_attn_core(v.float() if impl == "per_level" else v, shapes, lo, w, impl=impl)
        grad_out = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out.float() * grad_out).sum().backward()
        results[impl] = [out.detach().float(), v.grad.float(), lo.grad, w.grad]
    names = ["out", "grad_value", "grad_loc", "grad_weights"]
    return {
        name: {"max_err": (a - b).abs().max().item(), "scale": a.abs().max().item(), "nonzero": bool(a.abs().sum() > 0)}
        for name, a, b in zip(names, results["per_level"], results["fused"])
    }


@pytest.fixture(scope="module")
def compared() -> list[dict]:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fused_kernels_match_grid_sample_values_and_gradients(compared, index):
    case, result = CASES[index], compared[index]
    # bf16 values are rounded before both paths see them, so both sum the same numbers;
    # only the float32 accumulation order differs
    tolerance = 1e-5 if case["dtype"] == "float32" else 1e-4
    for name, r in result.items():
        assert r["nonzero"], f"{name} is all zero: the case tests nothing"
        assert r["max_err"] <= tolerance * max(1.0, r["scale"]), (name, r)


def test_default_impl_is_fused_only_where_triton_runs():
    import torch

    from dino.models.ms_deform_attn import default_impl

    assert default_impl(torch.device("cpu")) == "per_level"  # no interpreter in this process
    assert default_impl(torch.device("cuda")) in ("fused", "canvas")


def test_unknown_impl_is_an_error():
    import torch

    from dino.models.ms_deform_attn import ms_deform_attn_core

    with pytest.raises(ValueError, match="canvas"):
        ms_deform_attn_core(torch.zeros(1, 1, 1, 1), [(1, 1)], torch.zeros(1, 1, 1, 1, 1, 2), torch.zeros(1, 1, 1, 1, 1),
                            impl="cuda")


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print(json.dumps([_compare(case) for case in CASES]))
