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
    case, result = CASES[index], compared["cases"][index]
    # bf16 values are rounded before both paths see them, so both sum the same numbers;
    # only the float32 accumulation order differs
    tolerance = 1e-5 if case["dtype"] == "float32" else 1e-4
    for name, r in result.items():
        assert r["nonzero"], f"{name} is all zero: the case tests nothing"
        assert r["max_err"] <= tolerance * max(1.0, r["scale"]), (name, r)


def test_real_kernels_pass_their_self_check(compared):
    assert compared["self_check"] is None


def _small_inputs():
    import torch

    torch.manual_seed(1)
    shapes = [(5, 4), (2, 3)]
    value = torch.randn(2, 26, 2, 4)
    loc = torch.rand(2, 10, 2, 2, 3, 2)
    weights = torch.rand(2, 10, 2, 2, 3).softmax(-1)
    return value, shapes, loc, weights


def test_self_check_reports_a_kernel_that_raises_or_computes_wrong_values():
    from dino.models.ms_deform_attn import check_fused, sample_per_level

    value, shapes, loc, weights = _small_inputs()

    def raises(*args):
        raise RuntimeError("PTX .version 8.7 does not support .target sm_60\nmore")

    def off_by_ten_percent(*args):
        return sample_per_level(*args) * 1.1

    def no_location_gradient(v, s, lo, w):
        return sample_per_level(v, s, lo.detach(), w)

    assert check_fused(value, shapes, loc, weights, fused=sample_per_level) is None
    assert check_fused(value, shapes, loc, weights, fused=raises) == (
        "fused path raised RuntimeError: PTX .version 8.7 does not support .target sm_60")
    assert check_fused(value, shapes, loc, weights, fused=off_by_ten_percent).startswith("output differs")
    # backward is checked too, not only forward
    import torch

    class DoubledValueGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            return v.view_as(v)

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    def wrong_value_gradient(v, s, lo, w):
        return sample_per_level(DoubledValueGradient.apply(v), s, lo, w)

    assert check_fused(value, shapes, loc, weights, fused=wrong_value_gradient).startswith("grad value differs")
    assert check_fused(value, shapes, loc, weights, fused=no_location_gradient) == (
        "fused path gave no gradient for locations")


def test_default_path_falls_back_to_grid_sample_with_one_warning(monkeypatch):
    import warnings

    import dino.models.ms_deform_attn as msda

    value, shapes, loc, weights = _small_inputs()
    monkeypatch.setattr(msda, "default_impl", lambda device: "fused")
    monkeypatch.setattr(msda, "_FUSED_VERDICTS", {})
    checks = []

    def failing_check(*args):
        checks.append(1)
        return "fused path raised CompilationError: no ptxas"

    monkeypatch.setattr(msda, "check_fused", failing_check)
    expected = msda.ms_deform_attn_core(value, shapes, loc, weights, impl="canvas")
    with pytest.warns(RuntimeWarning, match="failed its self-check on cpu .*no ptxas.*grid_sample"):
        got = msda.ms_deform_attn_core(value, shapes, loc, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the verdict is kept: no second check, no second warning
        again = msda.ms_deform_attn_core(value, shapes, loc, weights)
    assert checks == [1]
    assert torch_equal(got, expected) and torch_equal(again, expected)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


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


def _self_check_verdict() -> str | None:
    import torch

    from dino.models.ms_deform_attn import check_fused

    torch.manual_seed(0)
    shapes = [(6, 7), (3, 4), (2, 2)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 8).to(torch.bfloat16)
    loc = torch.rand(2, 90, 2, 3, 4, 2) * 1.2 - 0.1
    weights = torch.rand(2, 90, 2, 3, 4).softmax(-1)
    return check_fused(value, shapes, loc, weights)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print(json.dumps({"cases": [_compare(case) for case in CASES], "self_check": _self_check_verdict()}))
