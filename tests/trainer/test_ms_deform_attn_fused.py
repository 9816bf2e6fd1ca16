"""The fused Triton deformable attention against the PyTorch path, values and gradients,
and the first-use self-check that decides whether a run may use it.

CI has no GPU, so the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), which
executes the very same kernel code on the CPU. The interpreter must be chosen before the
kernels are defined, hence a subprocess running this file's ``__main__`` block. With
``DINO_FUSED_TEST_DEVICE=cuda`` the subprocess runs the same cases compiled, on the GPU
(``bench/gpu_check.py`` does that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# the first test waits for the interpreted kernels (the subprocess may take up to 900 s)
pytestmark = pytest.mark.timeout(1200)

DEVICE = os.environ.get("DINO_FUSED_TEST_DEVICE", "cpu")  # cuda: the compiled kernels, no interpreter

# shapes, (B, Lq, nH, hd, P), value dtype, spread of the locations around [0, 1]; "same"
# puts every query of a head on one point (all programs add into the same value rows)
CASES = [
    {"shapes": [[6, 7], [3, 4], [2, 2], [1, 1]], "dims": [2, 70, 2, 8, 3], "dtype": "float32", "spread": 1.4},
    {"shapes": [[5, 3], [2, 6]], "dims": [1, 9, 3, 6, 2], "dtype": "float32", "spread": 6.0},  # hd not 2^k
    {"shapes": [[4, 4], [2, 2], [1, 1]], "dims": [2, 33, 2, 16, 4], "dtype": "bfloat16", "spread": 1.2},
    # DINO-4scale's layout: 8 heads x 32 channels, 4 levels x 4 points, 3 query tiles (BLOCK_Q 64)
    {"shapes": [[8, 8], [4, 4], [2, 2], [1, 1]], "dims": [2, 150, 8, 32, 4], "dtype": "bfloat16", "spread": 1.3},
    {"shapes": [[8, 8], [4, 4], [2, 2], [1, 1]], "dims": [1, 150, 8, 32, 4], "dtype": "float16", "spread": 1.3},
    {"shapes": [[6, 6], [3, 3]], "dims": [2, 140, 2, 8, 4], "dtype": "float32", "spread": 1.0, "same": True},
]
# bf16/fp16 values are rounded before both paths see them, so both sum the same numbers:
# only the float32 accumulation order differs, and the value gradient's rounding back to
# the value dtype (at most its unit roundoff of the scale)
ROUNDOFF = {"float32": 0.0, "bfloat16": 2.0**-8, "float16": 2.0**-11}


def _inputs(case: dict):
    import torch

    torch.manual_seed(0)
    shapes = [tuple(s) for s in case["shapes"]]
    batch, n_queries, n_heads, head_dim, n_points = case["dims"]
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, n_heads, head_dim).to(getattr(torch, case["dtype"]))
    spread = case["spread"]
    loc_shape = (batch, n_queries, n_heads, len(shapes), n_points, 2)
    if case.get("same"):
        loc = torch.rand(1, 1, n_heads, len(shapes), n_points, 2).expand(loc_shape).contiguous()
    else:
        loc = torch.rand(loc_shape) * spread - (spread - 1) / 2
    weights = torch.rand(batch, n_queries, n_heads, len(shapes), n_points).softmax(-1)
    return value.to(DEVICE), shapes, loc.to(DEVICE), weights.to(DEVICE)


def _run_both(value, shapes, loc, weights):
    import torch

    from dino.models.ms_deform_attn import ms_deform_attn_core

    results = {}
    for impl in ("per_level", "fused"):
        v, lo, w = (t.clone().requires_grad_() for t in (value, loc, weights))
        # the reference samples the same (rounded) values in float32
        out = ms_deform_attn_core(v.float() if impl == "per_level" else v, shapes, lo, w, impl=impl)
        grad_out = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
        (out.float() * grad_out).sum().backward()
        results[impl] = [t.cpu() for t in (out.detach().float(), v.grad.float(), lo.grad, w.grad)]
    return results


def _compare(case: dict) -> dict:
    results = _run_both(*_inputs(case))
    names = ["out", "grad_value", "grad_loc", "grad_weights"]
    return {
        name: {"max_err": (a - b).abs().max().item(), "scale": a.abs().max().item(), "nonzero": bool(a.abs().sum() > 0)}
        for name, a, b in zip(names, results["per_level"], results["fused"])
    }


def _non_finite() -> dict:
    """NaN and infinite locations. Ours gives NaN for exactly those points (their query's
    output, their location and weight gradients), whatever the device; grid_sample gives
    NaN there on the CPU but zeros on CUDA. Everything else equals the reference."""
    import torch

    value, shapes, loc, weights = _inputs(CASES[0])
    loc[0, 3, 0, 1, 0, 0] = float("nan")
    loc[1, 5, 1, 0, 2, 1] = float("inf")
    loc[1, 7, 0, 2, 1, 0] = -float("inf")
    bad_point = ~torch.isfinite(loc.cpu()).all(-1)  # [B, Lq, nH, L, P]
    head_dim = value.shape[-1]
    expected = {
        "out": bad_point.any(-1).any(-1)[..., None].expand(-1, -1, -1, head_dim).flatten(2),
        "grad_value": torch.zeros(value.shape, dtype=torch.bool),
        "grad_loc": bad_point[..., None].expand(*bad_point.shape, 2),
        "grad_weights": bad_point,
    }
    results = _run_both(value, shapes, loc, weights)
    report = {}
    for name, ref, got in zip(["out", "grad_value", "grad_loc", "grad_weights"], results["per_level"],
                              results["fused"]):
        nan = expected[name]
        report[name] = {"nan_where_expected": bool(torch.equal(got.isnan(), nan)), "n_nan": int(nan.sum()),
                        "reference_nan_there_or_nowhere": bool(torch.equal(ref.isnan() & ~nan, torch.zeros_like(nan))),
                        "max_err": (ref[~nan] - got[~nan]).abs().max().item()}
    return report


def _module_default_path() -> dict:
    """``MSDeformAttn`` under bf16 autocast with the default path (``impl=None``): it runs
    the kernels once they pass their check, and matches the per-level path."""
    import torch

    from dino.models.ms_deform_attn import MSDeformAttn, attention_paths

    torch.manual_seed(0)
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1)]
    tokens = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.02)
    query, value = torch.randn(2, 130, 256), torch.randn(2, tokens, 256)
    ref = torch.rand(2, 130, 4, 2)
    attn, query, value, ref = (t.to(DEVICE) for t in (attn, query, value, ref))
    outs = {}
    for impl in (None, "per_level"):
        attn.impl = impl
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            outs[impl] = attn(query, ref, value, shapes).float()
        outs[str(impl) + "_path"] = attention_paths(attn)
    return {"path": outs["None_path"], "reference_path": outs["per_level_path"],
            "max_err": (outs[None] - outs["per_level"]).abs().max().item(),
            "scale": outs["per_level"].abs().max().item()}


def _init_inputs(device: str = DEVICE):
    """What a freshly initialised encoder layer hands the core: reference points at pixel
    centres plus whole-pixel offsets, i.e. every sampling point on a bilinear kink."""
    import torch

    import dino.models.ms_deform_attn as msda

    torch.manual_seed(0)
    shapes = [(12, 12), (6, 6), (3, 3), (2, 2)]
    tokens = sum(h * w for h, w in shapes)
    attn = msda.MSDeformAttn(64, 4, 8, 4)
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        refs.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    ref = torch.cat(refs)[None, :, None, :].expand(1, tokens, 4, 2)
    seen = {}
    original = msda.ms_deform_attn_core

    def capture(value, spatial_shapes, locations, weights, impl=None):
        seen.update(value=value, locations=locations, weights=weights)
        return original(value, spatial_shapes, locations, weights, impl="per_level")

    msda.ms_deform_attn_core = capture
    try:
        attn.impl = "per_level"
        attn.to(device)(torch.randn(1, tokens, 64, device=device), ref.to(device), torch.randn(1, tokens, 64, device=device),
                        shapes)
    finally:
        msda.ms_deform_attn_core = original
    return seen["value"], shapes, seen["locations"], seen["weights"]


def _self_checks() -> dict:
    import torch

    from dino.models.ms_deform_attn import check_fused

    torch.manual_seed(0)
    shapes = [(6, 7), (3, 4), (2, 2)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 8).to(torch.bfloat16).to(DEVICE)
    loc = (torch.rand(2, 90, 2, 3, 4, 2) * 1.2 - 0.1).to(DEVICE)
    weights = torch.rand(2, 90, 2, 3, 4).softmax(-1).to(DEVICE)
    value0, shapes0, loc0, weights0 = _init_inputs()
    pixel = loc0[..., 0].cpu() * torch.tensor([w for _, w in shapes0]).view(1, 1, 1, -1, 1) - 0.5
    on_kink = ((pixel - pixel.round()).abs() < 1e-4).float().mean().item()
    return {"random": check_fused(value, shapes, loc, weights), "init": check_fused(value0, shapes0, loc0, weights0),
            "init_on_kink_fraction": on_kink}


def interpreter_results() -> dict:
    return {"cases": [_compare(case) for case in CASES], "non_finite": _non_finite(),
            "module": _module_default_path(), "self_check": _self_checks()}


@pytest.fixture(scope="module")
def compared() -> dict:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    if DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("DINO_FUSED_TEST_DEVICE=cuda but no GPU is visible")
        env.pop("TRITON_INTERPRET")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fused_kernels_match_grid_sample_values_and_gradients(compared, index):
    case, result = CASES[index], compared["cases"][index]
    for name, r in result.items():
        assert r["nonzero"], f"{name} is all zero: the case tests nothing"
        tolerance = 1e-5 + (ROUNDOFF[case["dtype"]] if name == "grad_value" else 0.0)
        assert r["max_err"] <= tolerance * max(1.0, r["scale"]), (name, r)


def test_nan_and_infinite_locations_give_nan_for_those_points_and_touch_no_memory(compared):
    result = compared["non_finite"]
    assert result["out"]["n_nan"] > 0 and result["grad_loc"]["n_nan"] > 0
    for name, r in result.items():
        assert r["nan_where_expected"], (name, r)  # grad_value: no NaN scattered into the values' gradient
        assert r["reference_nan_there_or_nowhere"], (name, r)
        assert r["max_err"] <= 1e-5, (name, r)


def test_module_under_bf16_autocast_runs_the_fused_kernels_by_default(compared):
    result = compared["module"]
    assert result["path"] == ["fused"] and result["reference_path"] == ["per_level"]
    assert result["max_err"] <= 1e-2 * result["scale"], result  # bf16 projections around the core


def test_real_kernels_pass_their_self_check_also_on_a_fresh_models_kink_inputs(compared):
    checks = compared["self_check"]
    assert checks["random"] is None
    # a fresh encoder layer samples on whole pixels: the check used to compare the two
    # one-sided location gradients there and reject correct kernels
    assert checks["init_on_kink_fraction"] > 0.2
    assert checks["init"] is None


def _small_inputs(dtype=None):
    import torch

    torch.manual_seed(1)
    shapes = [(5, 4), (2, 3)]
    value = torch.randn(2, 26, 2, 4)
    if dtype is not None:
        value = value.to(dtype)
    loc = torch.rand(2, 10, 2, 2, 3, 2)
    weights = torch.rand(2, 10, 2, 2, 3).softmax(-1)
    return value, shapes, loc, weights


def test_self_check_reports_a_kernel_that_raises_or_computes_wrong_values():
    from dino.models.ms_deform_attn import check_fused, sample_per_level

    value, shapes, loc, weights = _small_inputs()

    def raises(*args):
        raise RuntimeError("PTX .version 8.7 does not support .target sm_60\nmore")

    def no_location_gradient(v, s, lo, w):
        return sample_per_level(v, s, lo.detach(), w)

    assert check_fused(value, shapes, loc, weights, fused=sample_per_level) is None
    assert check_fused(value, shapes, loc, weights, fused=raises) == (
        "fused path raised RuntimeError: PTX .version 8.7 does not support .target sm_60")
    assert check_fused(value, shapes, loc, weights, fused=no_location_gradient) == (
        "fused path gave no gradient for locations")


class _Scale:
    """A path off by ``factor`` in one of its results: the output, or one gradient."""

    def __init__(self, where: str, factor: float):
        self.where, self.factor = where, factor

    def __call__(self, v, s, lo, w):
        import torch

        from dino.models.ms_deform_attn import sample_per_level

        factor, where = self.factor, self.where

        class Off(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.view_as(t)

            @staticmethod
            def backward(ctx, grad):
                return grad * factor

        v = Off.apply(v) if where == "value" else v
        lo = Off.apply(lo) if where == "locations" else lo
        w = Off.apply(w) if where == "weights" else w
        out = sample_per_level(v, s, lo, w)
        return out * factor if where == "output" else out


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
@pytest.mark.parametrize("where,label", [("output", "output"), ("value", "grad value"),
                                         ("locations", "grad locations"), ("weights", "grad weights")])
def test_self_check_rejects_a_one_percent_error_in_any_result_for_every_value_dtype(where, label, dtype):
    import torch

    from dino.models.ms_deform_attn import check_fused

    value, shapes, loc, weights = _small_inputs(getattr(torch, dtype) if dtype else None)
    verdict = check_fused(value, shapes, loc, weights, fused=_Scale(where, 1.01))
    assert verdict is not None and verdict.startswith(f"{label} differs"), verdict
    # and half a percent too, but for a bf16 value gradient (bf16 rounds by up to 0.4 %)
    if where != "value" or dtype != "bfloat16":
        assert check_fused(value, shapes, loc, weights, fused=_Scale(where, 1.005)) is not None


def test_self_check_accepts_value_gradients_rounded_to_the_value_dtype():
    """A faithful path that hands the value gradient back in bf16 (as the kernels do)
    passes: the tolerance covers exactly that rounding."""
    import torch

    from dino.models.ms_deform_attn import check_fused, sample_per_level

    value, shapes, loc, weights = _small_inputs(torch.bfloat16)

    def rounded(v, s, lo, w):
        return sample_per_level(v.float(), s, lo, w)  # grad flows back through .float(): rounded to bf16

    assert check_fused(value, shapes, loc, weights, fused=rounded) is None


def test_self_check_is_not_fooled_by_kinks_in_the_real_locations():
    """A faithful path that takes the other one-sided derivative at whole pixels (it
    samples a hair to the right) passes: the check's own points keep clear of kinks,
    whatever the real call's locations are."""
    from dino.models.ms_deform_attn import check_fused, sample_per_level

    value, shapes, loc, weights = _init_inputs("cpu")

    def other_side(v, s, lo, w):
        return sample_per_level(v, s, lo + 1e-6, w)

    grads = []
    for fn in (sample_per_level, other_side):
        lo = loc.detach().clone().requires_grad_()
        fn(value.detach(), shapes, lo, weights.detach()).sum().backward()
        grads.append(lo.grad)
    scale = grads[0].abs().max()
    assert (grads[0] - grads[1]).abs().max() > 0.1 * scale  # at the real points the two sides differ
    assert check_fused(value, shapes, loc, weights, fused=other_side) is None


def test_check_points_keep_clear_of_whole_pixels_and_cover_the_borders():
    import torch

    from dino.models.ms_deform_attn import generic_locations

    shapes = [(40, 40), (20, 20), (10, 10), (5, 5)]
    loc = generic_locations((1, 100, 8, 4, 4, 2), shapes, torch.device("cpu"))
    for level, (h, w) in enumerate(shapes):
        pixel = loc[..., level, :, :].double() * torch.tensor([w, h], dtype=torch.float64) - 0.5
        frac = pixel - pixel.floor()
        assert frac.min() > 0.099 and frac.max() < 0.901
        assert pixel.min() < -1 and pixel[..., 0].max() > w  # points beyond both borders


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


def test_a_check_running_in_another_thread_is_waited_for_not_repeated(monkeypatch):
    """A warm trainer checks its attention in a thread (dino.warm.AttentionCheck) while its
    warm-up runs the model: a first call that arrives during that check waits for its
    verdict instead of compiling and checking the same kernels a second time."""
    import threading
    import time

    import dino.models.ms_deform_attn as msda

    value, shapes, loc, weights = _small_inputs()
    monkeypatch.setattr(msda, "_FUSED_VERDICTS", {})
    started, checks = threading.Event(), []

    def slow_check(*args):
        checks.append(threading.current_thread().name)
        started.set()
        time.sleep(0.5)
        return None

    monkeypatch.setattr(msda, "check_fused", slow_check)
    verdicts = {}
    ahead = threading.Thread(target=lambda: verdicts.setdefault("ahead", msda.fused_usable(value, shapes, loc, weights)),
                             name="attention-check")
    ahead.start()
    assert started.wait(10)
    began = time.perf_counter()
    assert msda.fused_usable(value, shapes, loc, weights)  # arrives mid-check: waits for it
    waited = time.perf_counter() - began
    ahead.join()
    assert checks == ["attention-check"] and verdicts == {"ahead": True}
    assert 0.2 < waited < 5


def test_a_fallback_is_what_the_module_reports_as_its_path(monkeypatch):
    """Speed rows name ``attention_paths``: after a failed check it says canvas, not fused."""
    import torch

    import dino.models.ms_deform_attn as msda

    monkeypatch.setattr(msda, "default_impl", lambda device: "fused")
    monkeypatch.setattr(msda, "_FUSED_VERDICTS", {})
    monkeypatch.setattr(msda, "check_fused", lambda *args: "grad locations differs")
    attn = msda.MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    assert msda.attention_paths(attn) == []
    with pytest.warns(RuntimeWarning):
        attn(torch.randn(1, 5, 16), torch.rand(1, 5, 2, 2), torch.randn(1, 26, 16), [(5, 4), (2, 3)])
    assert msda.attention_paths(attn) == ["canvas"]
    msda.force_impl(attn, "per_level")
    attn(torch.randn(1, 5, 16), torch.rand(1, 5, 2, 2), torch.randn(1, 26, 16), [(5, 4), (2, 3)])
    assert msda.attention_paths(attn) == ["per_level"]
    with pytest.raises(ValueError, match="canvas"):
        msda.force_impl(attn, "cuda")


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


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1" or DEVICE == "cuda"
    print(json.dumps(interpreter_results()))
