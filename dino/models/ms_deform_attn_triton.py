"""Fused multi-scale deformable attention for GPUs, written in Triton.

The pure-PyTorch path (``ms_deform_attn.sample_canvas``) materialises every bilinear
sample before weighting and summing them: ``[B*nH, hd, Lq, L*P]`` floats, about 0.9 GB
per encoder layer at batch 4 and 800x800, written and read again in the forward pass and
twice more in the backward pass. These kernels keep the samples in registers: the
forward pass gathers the four corner rows of each sampling point straight from
``value`` and accumulates ``weight * bilinear`` per query; the backward pass recomputes
the corners, scatters ``grad * weight`` into ``grad_value`` with atomic adds (as the
original Deformable-DETR CUDA kernel does) and reduces the gradients of the locations
and attention weights per point in registers.

Semantics are ``F.grid_sample(mode="bilinear", padding_mode="zeros",
align_corners=False)`` per level: location (x, y) in [0, 1] of a level's padded map is
pixel ``(x * W - 0.5, y * H - 0.5)``; corners outside the map read zero; a NaN or
infinite location gives NaN (its sample and its location and weight gradients), as
grid_sample does on the CPU, and never reads or writes memory. Gradients of the
locations follow the bilinear weights (the floor is treated as constant), exactly as
grid_sample's. At a whole pixel position (a kink of the bilinear interpolation) the
location gradient is one of the two one-sided derivatives, and which one depends on how
``x * W - 0.5`` rounds: the fused path and grid_sample may legitimately pick different
sides there, which is why ``check_fused`` keeps its points away from kinks.

One program handles ``BLOCK_Q`` queries of one (image, head): a ``[BLOCK_Q, hd]`` tile
whose rows are contiguous ``hd``-channel runs of ``value`` (coalesced gathers).

``TRITON_INTERPRET=1`` runs the same kernels on the CPU (slowly), which is how the tests
check them against the PyTorch path on a machine without a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from dino.models import constants
from dino.models.graph_breaks import graph_break

try:  # triton ships with CUDA builds of torch; CPU-only installs fall back to PyTorch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

BLOCK_Q = 64  # queries per program; with hd = 32 a 64 x 32 tile per gather
NUM_WARPS = 4  # bench/msda_kernel_speed.py compares other choices


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``, tests only)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run for tensors on ``device``."""
    if triton is None or os.environ.get("DINO_MSDA_IMPL", "").lower() == "pytorch":
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


if triton is not None:

    @triton.jit
    def _tile(n_tokens, n_queries, NH: tl.constexpr, HD: tl.constexpr, HD_P2: tl.constexpr,
              BLOCK_Q: tl.constexpr):
        """This program's ``BLOCK_Q`` queries of one (image, head): the query and channel
        masks, ``row`` (the flat index of each (b, q, h)) and the offset of (b, h) in value."""
        b = tl.program_id(1) // NH
        h = tl.program_id(1) % NH
        q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        channels = tl.arange(0, HD_P2)
        row = (b * n_queries + q).to(tl.int64) * NH + h
        base = b.to(tl.int64) * n_tokens * NH * HD + h * HD
        return q < n_queries, channels, channels < HD, row, base

    @triton.jit
    def _level(shapes_ptr, starts_ptr, lvl):
        """(H, W, first token) of level ``lvl``."""
        return tl.load(shapes_ptr + 2 * lvl), tl.load(shapes_ptr + 2 * lvl + 1), tl.load(starts_ptr + lvl)

    @triton.jit
    def _corner(value_base, start, tok_stride, x0, y0, dx: tl.constexpr, dy: tl.constexpr, width, height, qmask,
                channels, cmask):
        """Token index, validity and ``[BLOCK_Q, HD]`` values of one bilinear corner."""
        xi = x0 + dx
        yi = y0 + dy
        valid = qmask & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        token = start + yi * width + xi
        token = tl.where(valid, token, 0).to(tl.int64)
        ptrs = value_base + token[:, None] * tok_stride + channels[None, :]
        v = tl.load(ptrs, mask=valid[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        return token, valid, v

    @triton.jit
    def _point(loc_ptr, attn_ptr, offs, qmask, width, height):
        """Pixel-space corner origin, fractions, attention weight and ``poison`` of one
        point per query. ``poison`` is NaN where the location is NaN or infinite (else 0):
        added to the sample and to the location and weight gradients it makes them NaN,
        as grid_sample's are, while no corner of such a point is read or written."""
        lx = tl.load(loc_ptr + offs * 2, mask=qmask, other=-1.0)
        ly = tl.load(loc_ptr + offs * 2 + 1, mask=qmask, other=-1.0)
        finite = (tl.abs(lx) < float("inf")) & (tl.abs(ly) < float("inf"))  # False for NaN too
        poison = tl.where(finite, 0.0, float("nan"))
        x = tl.where(finite, lx, -1.0) * width - 0.5
        y = tl.where(finite, ly, -1.0) * height - 0.5
        # far outside reads zero anyway; the clamp keeps the int conversion defined
        x = tl.minimum(tl.maximum(x, -4.0), width + 4.0)
        y = tl.minimum(tl.maximum(y, -4.0), height + 4.0)
        a = tl.load(attn_ptr + offs, mask=qmask, other=0.0)
        xf = tl.floor(x)
        yf = tl.floor(y)
        return xf.to(tl.int32), yf.to(tl.int32), x - xf, y - yf, a, poison

    @triton.jit
    def _scatter(grad_value_base, token, grad, valid, channels, cmask, tok_stride):
        """Atomically add ``grad [BLOCK_Q, HD]`` into the value rows ``token [BLOCK_Q]``.

        Relaxed: the adds only have to sum, nothing reads them before the kernel ends.
        Triton's default (acq_rel) compiles each vector add on sm_90 to a GPU-wide
        ``MEMBAR`` plus an L1 invalidate around an ``ATOMG`` that returns its old value;
        relaxed is a fire-and-forget ``REDG`` (tests/trainer/test_msda_kernel_sass.py)."""
        tl.atomic_add(grad_value_base + token[:, None] * tok_stride + channels[None, :], grad,
                      mask=valid[:, None] & cmask[None, :], sem="relaxed")

    # Token and query counts change with the image size and the denoising-query count;
    # specialising on them (divisibility by 16) would recompile the kernels for each
    # combination, ~30 s apiece on an H100 host.
    @triton.jit(do_not_specialize=["n_tokens", "n_queries"])
    def _msda_fwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, n_tokens, n_queries,
                  NH: tl.constexpr, HD: tl.constexpr, HD_P2: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                  BLOCK_Q: tl.constexpr):
        qmask, channels, cmask, row, base = _tile(n_tokens, n_queries, NH, HD, HD_P2, BLOCK_Q)
        value_base = value_ptr + base
        acc = tl.zeros([BLOCK_Q, HD_P2], dtype=tl.float32)
        for lvl in range(L):  # a loop, not unrolled: 4x less code to compile
            height, width, start = _level(shapes_ptr, starts_ptr, lvl)
            for p in tl.static_range(P):
                offs = row * (L * P) + lvl * P + p
                x0, y0, fx, fy, a, poison = _point(loc_ptr, attn_ptr, offs, qmask, width, height)
                _, _, v00 = _corner(value_base, start, NH * HD, x0, y0, 0, 0, width, height, qmask, channels, cmask)
                _, _, v10 = _corner(value_base, start, NH * HD, x0, y0, 1, 0, width, height, qmask, channels, cmask)
                _, _, v01 = _corner(value_base, start, NH * HD, x0, y0, 0, 1, width, height, qmask, channels, cmask)
                _, _, v11 = _corner(value_base, start, NH * HD, x0, y0, 1, 1, width, height, qmask, channels, cmask)
                top = v00 + (v10 - v00) * fx[:, None]
                bottom = v01 + (v11 - v01) * fx[:, None]
                acc += (top + (bottom - top) * fy[:, None] + poison[:, None]) * a[:, None]
        out_ptrs = out_ptr + row[:, None] * HD + channels[None, :]
        tl.store(out_ptrs, acc, mask=qmask[:, None] & cmask[None, :])

    @triton.jit(do_not_specialize=["n_tokens", "n_queries"])
    def _msda_bwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr, grad_value_ptr,
                  grad_loc_ptr, grad_attn_ptr, n_tokens, n_queries, NH: tl.constexpr, HD: tl.constexpr,
                  HD_P2: tl.constexpr, L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr):
        qmask, channels, cmask, row, base = _tile(n_tokens, n_queries, NH, HD, HD_P2, BLOCK_Q)
        value_base = value_ptr + base
        grad_value_base = grad_value_ptr + base
        g = tl.load(grad_out_ptr + row[:, None] * HD + channels[None, :], mask=qmask[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)  # [BLOCK_Q, HD]
        for lvl in range(L):  # a loop, not unrolled: 4x less code to compile
            height, width, start = _level(shapes_ptr, starts_ptr, lvl)
            for p in tl.static_range(P):
                offs = row * (L * P) + lvl * P + p
                x0, y0, fx, fy, a, poison = _point(loc_ptr, attn_ptr, offs, qmask, width, height)
                t00, m00, v00 = _corner(value_base, start, NH * HD, x0, y0, 0, 0, width, height, qmask, channels, cmask)
                t10, m10, v10 = _corner(value_base, start, NH * HD, x0, y0, 1, 0, width, height, qmask, channels, cmask)
                t01, m01, v01 = _corner(value_base, start, NH * HD, x0, y0, 0, 1, width, height, qmask, channels, cmask)
                t11, m11, v11 = _corner(value_base, start, NH * HD, x0, y0, 1, 1, width, height, qmask, channels, cmask)
                # g . v of each corner: [BLOCK_Q]
                s00 = tl.sum(g * v00, axis=1)
                s10 = tl.sum(g * v10, axis=1)
                s01 = tl.sum(g * v01, axis=1)
                s11 = tl.sum(g * v11, axis=1)
                gx = 1.0 - fx
                gy = 1.0 - fy
                bilinear = gx * gy * s00 + fx * gy * s10 + gx * fy * s01 + fx * fy * s11
                tl.store(grad_attn_ptr + offs, bilinear + poison, mask=qmask)
                d_fx = gy * (s10 - s00) + fy * (s11 - s01)
                d_fy = gx * (s01 - s00) + fx * (s11 - s10)
                tl.store(grad_loc_ptr + offs * 2, (a * d_fx + poison) * width, mask=qmask)
                tl.store(grad_loc_ptr + offs * 2 + 1, (a * d_fy + poison) * height, mask=qmask)
                # scatter grad * weight into each corner's value row
                ga = g * a[:, None]
                _scatter(grad_value_base, t00, ga * (gx * gy)[:, None], m00, channels, cmask, NH * HD)
                _scatter(grad_value_base, t10, ga * (fx * gy)[:, None], m10, channels, cmask, NH * HD)
                _scatter(grad_value_base, t01, ga * (gx * fy)[:, None], m01, channels, cmask, NH * HD)
                _scatter(grad_value_base, t11, ga * (fx * fy)[:, None], m11, channels, cmask, NH * HD)


_LEVEL_TABLES: dict[tuple, tuple[Tensor, Tensor]] = constants.register({})


def level_tables(spatial_shapes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """``shapes [L, 2]`` (H, W) and ``starts [L]`` int32 on ``device``, built once per shapes."""
    key = (tuple((int(h), int(w)) for h, w in spatial_shapes), device)
    tables = _LEVEL_TABLES.get(key)
    if tables is None:
        starts, total = [], 0
        for h, w in key[0]:
            starts.append(total)
            total += h * w
        if len(_LEVEL_TABLES) > 64:  # many input sizes (dynamic padding): keep it bounded
            _LEVEL_TABLES.clear()
        tables = _LEVEL_TABLES[key] = (torch.tensor(key[0], dtype=torch.int32, device=device),
                                       torch.tensor(starts, dtype=torch.int32, device=device))
    return tables


def _launch_args(value: Tensor, locations: Tensor) -> tuple[tuple, dict]:
    batch, n_tokens, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = locations.shape
    grid = (triton.cdiv(n_queries, BLOCK_Q), batch * n_heads)
    meta = dict(NH=n_heads, HD=head_dim, HD_P2=triton.next_power_of_2(head_dim), L=n_levels, P=n_points,
                BLOCK_Q=BLOCK_Q, num_warps=NUM_WARPS)
    return grid, meta


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, shapes: Tensor, starts: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
        value = value.contiguous()
        locations = locations.float().contiguous()
        weights = weights.float().contiguous()
        batch, n_tokens, n_heads, head_dim = value.shape
        n_queries = locations.shape[1]
        out = torch.empty(batch, n_queries, n_heads, head_dim, dtype=torch.float32, device=value.device)
        grid, meta = _launch_args(value, locations)
        _msda_fwd[grid](value, shapes, starts, locations, weights, out, n_tokens, n_queries, **meta)
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return out.view(batch, n_queries, n_heads * head_dim)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        n_tokens, n_queries = value.shape[1], locations.shape[1]
        grad_out = grad_out.float().contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.empty_like(locations)
        grad_attn = torch.empty_like(weights)
        grid, meta = _launch_args(value, locations)
        _msda_bwd[grid](value, shapes, starts, locations, weights, grad_out, grad_value, grad_loc, grad_attn,
                        n_tokens, n_queries, **meta)
        return grad_value.to(value.dtype), None, None, grad_loc, grad_attn


@graph_break
def ms_deform_attn_fused(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                         attention_weights: Tensor) -> Tensor:
    """Same contract as ``ms_deform_attn.ms_deform_attn_core``, one fused kernel each way.

    Args:
        value: ``[B, S, nH, hd]``; sampling_locations: ``[B, Lq, nH, L, P, 2]`` in [0, 1];
        attention_weights: ``[B, Lq, nH, L, P]``.
    Returns:
        ``[B, Lq, nH * hd]`` float32. (A graph break under torch.compile: the kernel is
        already fused, and Dynamo need not trace the launch.)
    """
    shapes, starts = level_tables(spatial_shapes, value.device)
    return _MSDeformAttnFunction.apply(value, shapes, starts, sampling_locations, attention_weights)
