"""Multi-scale deformable attention against a direct, loop-based bilinear sampler."""

import math

import pytest
import torch

from dino.models.ms_deform_attn import MSDeformAttn, ms_deform_attn_core


def _bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``img [C, H, W]`` at pixel coords (x, y) with zeros outside the map."""
    _, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(img.shape[0], dtype=img.dtype)
    for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
        if 0 <= xi < w and 0 <= yi < h:
            out += (1 - abs(x - xi)) * (1 - abs(y - yi)) * img[:, yi, xi]
    return out


def _reference(value, shapes, locations, weights):
    """Definition of the core: for every query and head, sum over levels and points of
    weight * bilinear(value map of that level, location in pixels (align_corners=False))."""
    batch, _, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, n_queries, n_heads, head_dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(n_queries):
            for m in range(n_heads):
                for lvl, (h, w) in enumerate(shapes):
                    img = value[b, starts[lvl]:starts[lvl + 1], m].T.reshape(head_dim, h, w)
                    for p in range(n_points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        out[b, q, m] += weights[b, q, m, lvl, p] * _bilinear(img, x, y)
    return out.flatten(2)


def _random_inputs(seed: int, shapes, n_queries=3, n_heads=2, head_dim=3, n_points=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    batch, n_levels, tokens = 2, len(shapes), sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, n_heads, head_dim, generator=gen, dtype=dtype)
    # some locations fall outside [0, 1] to exercise the zero padding
    locations = torch.rand(batch, n_queries, n_heads, n_levels, n_points, 2, generator=gen, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, n_queries, n_heads, n_levels, n_points, generator=gen, dtype=dtype)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    return value, locations, weights


@pytest.mark.parametrize("seed", [0, 1])
def test_core_matches_loop_reference(seed):
    shapes = [(3, 4), (2, 2), (1, 3)]
    value, locations, weights = _random_inputs(seed, shapes)
    got = ms_deform_attn_core(value, shapes, locations, weights)
    assert got.shape == (2, 3, 2 * 3)
    assert torch.allclose(got, _reference(value, shapes, locations, weights), atol=1e-10)


def test_core_gradients_match_finite_differences():
    shapes = [(2, 3), (1, 2)]
    value, locations, weights = _random_inputs(3, shapes, n_queries=2, n_points=1)
    value.requires_grad_(True)
    weights.requires_grad_(True)
    locations.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn_core(v, shapes, l, a), (value, locations, weights))


def _ramp_module(n_heads: int, n_points: int, height: int, width: int) -> MSDeformAttn:
    """One-level module whose value map per head is (x pixel, y pixel): its output is
    then the attention-weighted mean sampling position, in pixels."""
    attn = MSDeformAttn(d_model=2 * n_heads, n_levels=1, n_heads=n_heads, n_points=n_points).double()
    with torch.no_grad():
        attn.value_proj.weight.copy_(torch.eye(2 * n_heads))
        attn.value_proj.bias.zero_()
        attn.output_proj.weight.copy_(torch.eye(2 * n_heads))
        attn.output_proj.bias.zero_()
    return attn


def _ramp_value(n_heads: int, height: int, width: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    per_head = torch.stack([xs.flatten(), ys.flatten()], -1)  # [S, 2]
    return per_head.repeat(1, n_heads)[None]  # [1, S, 2 * nH]


def test_initial_offsets_form_a_star_of_increasing_radius_in_pixels():
    n_heads, n_points, h, w = 4, 3, 20, 30
    attn = _ramp_module(n_heads, n_points, h, w)
    ref = torch.tensor([[[[0.5, 0.5]]]], dtype=torch.float64)  # [B=1, Lq=1, L=1, 2]
    query = torch.randn(1, 1, 2 * n_heads, dtype=torch.float64)  # irrelevant at init
    out = attn(query, ref, _ramp_value(n_heads, h, w), [(h, w)]).view(n_heads, 2)
    centre = torch.tensor([0.5 * w - 0.5, 0.5 * h - 0.5], dtype=torch.float64)
    mean_radius = (n_points + 1) / 2  # points at 1..P pixels, uniform weights
    directions = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)  # heads at 0, 90, 180, 270 deg
    assert torch.allclose(out, centre + mean_radius * directions, atol=1e-6)


def test_box_references_scale_offsets_by_box_size():
    n_heads, n_points, h, w = 4, 2, 40, 40
    attn = _ramp_module(n_heads, n_points, h, w)
    box = torch.tensor([[[[0.5, 0.5, 0.4, 0.2]]]], dtype=torch.float64)  # cx, cy, w, h
    query = torch.zeros(1, 1, 2 * n_heads, dtype=torch.float64)
    out = attn(query, box, _ramp_value(n_heads, h, w), [(h, w)]).view(n_heads, 2)
    # offset k of head m is (k+1) * dir_m; normalised shift = offset / P * box_wh / 2
    mean_offset = (n_points + 1) / 2
    directions = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
    shift = mean_offset / n_points * torch.tensor([0.4, 0.2], dtype=torch.float64) / 2 * directions
    expected = (torch.tensor([0.5, 0.5], dtype=torch.float64) + shift) * torch.tensor([w, h]) - 0.5
    assert torch.allclose(out, expected, atol=1e-6)


def test_padding_mask_zeroes_values_and_shapes_of_multi_level_forward():
    torch.manual_seed(0)
    shapes = [(4, 5), (2, 3)]
    tokens = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    query, value = torch.randn(2, 7, 16), torch.randn(2, tokens, 16)
    ref = torch.rand(2, 7, 2, 2)
    full_mask = torch.ones(2, tokens, dtype=torch.bool)
    out = attn(query, ref, value, shapes, full_mask)
    assert out.shape == (2, 7, 16)
    # every value masked: the output is the output projection's bias alone
    assert torch.allclose(out, attn.output_proj.bias.expand_as(out), atol=1e-6)


def test_autocast_bf16_matches_fp32():
    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4)]
    tokens = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=4)
    query, value, ref = torch.randn(2, 10, 32), torch.randn(2, tokens, 32), torch.rand(2, 10, 2, 4) * 0.5 + 0.25
    expected = attn(query, ref, value, shapes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attn(query, ref, value, shapes)
    assert got.dtype == torch.bfloat16
    assert torch.isfinite(got.float()).all()
    assert (got.float() - expected).abs().max() < 0.05 * expected.abs().max()
