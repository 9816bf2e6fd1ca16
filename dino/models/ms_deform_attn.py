"""Multi-scale deformable attention (Zhu et al., Deformable DETR).

Each query looks at only ``n_points`` sampled locations per head and feature level,
placed around its reference point by learned offsets, and mixes them with learned
weights (softmax over levels x points). Three implementations of the sampling, the same
values up to rounding (``ms_deform_attn_core``):

* ``fused`` (GPUs, the default there): Triton kernels that gather, weight and sum in
  registers, forward and backward (``ms_deform_attn_triton``). The default path uses
  them only after they pass ``check_fused`` on the device, else it falls back to the canvas.
* ``canvas`` (GPUs without Triton): ONE ``F.grid_sample`` over all levels. The level maps
  are stacked into a single zero-separated canvas (``CanvasLayout``) and every sampling
  location is mapped into it by a per-level affine transform. A point outside its own
  level is clamped into the zero band around that level, where it reads exactly zero,
  as the per-level zero-padded sampling would.
* ``per_level`` (the CPU): one ``grid_sample`` per level, faster there than the canvas
  (measured 1.5x on a ResNet-18-sized encoder layer).

Shapes used throughout:
  ``S = sum(H_l * W_l)`` flattened memory tokens, ``Lq`` queries, ``L`` levels,
  ``P`` points, ``nH`` heads, ``hd = d_model / nH``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models import constants, ms_deform_attn_triton
from dino.models.graph_breaks import graph_break

# Zero rows between two levels in the canvas. Two, so that a point clamped half a pixel
# beyond its level's one-pixel border band touches only zeros on both bilinear rows.
_GAP = 2


@dataclasses.dataclass(frozen=True)
class CanvasLayout:
    """Where each level sits in the stacked canvas, and the affine maps into it.

    Levels are stacked top to bottom, left-aligned, ``_GAP`` zero rows apart; the canvas
    is ``height x width`` (``width`` = the widest level). Broadcasting shapes are chosen
    for locations ``[..., L, P, 2]``.

    Attributes:
        index: ``[height * width]`` token index of every canvas pixel; ``S`` (one past
            the last token) where the canvas is empty, to read an appended zero.
        scale / shift: ``[L, 1, 2]``: ``grid = loc * scale + shift`` maps a location
            (x, y) in [0, 1] of its level to grid_sample's [-1, 1] canvas frame.
        low / high: ``[L, 1, 2]`` clamp bounds in the canvas frame: 1.5 pixels of the
            level beyond its first and last pixel centre, inside the zero band.
        sizes: ``[L, 1, 2]`` each level's (W_l, H_l), to turn pixel offsets into its frame.
    """

    height: int
    width: int
    index: Tensor
    scale: Tensor
    shift: Tensor
    low: Tensor
    high: Tensor
    sizes: Tensor


def _build_layout(spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> CanvasLayout:
    n_tokens = sum(h * w for h, w in spatial_shapes)
    width = max(w for _, w in spatial_shapes)
    height = sum(h for h, _ in spatial_shapes) + _GAP * (len(spatial_shapes) - 1)
    index = torch.full((height, width), n_tokens, dtype=torch.int64)
    scale, shift, low, high = [], [], [], []
    row, start = 0, 0
    for h, w in spatial_shapes:
        index[row:row + h, :w] = torch.arange(start, start + h * w).view(h, w)
        sx, sy = 2.0 * w / width, 2.0 * h / height
        tx, ty = -1.0, 2.0 * row / height - 1.0
        scale.append((sx, sy))
        shift.append((tx, ty))
        # level-frame bounds (-1/w, 1 + 1/w): pixel coords -1.5 and w + 0.5
        low.append((-1.0 / w * sx + tx, -1.0 / h * sy + ty))
        high.append(((1.0 + 1.0 / w) * sx + tx, (1.0 + 1.0 / h) * sy + ty))
        row += h + _GAP
        start += h * w

    def as_tensor(values: list[tuple[float, float]]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64).view(-1, 1, 2).to(device, dtype)

    return CanvasLayout(height, width, index.flatten().to(device), as_tensor(scale), as_tensor(shift),
                        as_tensor(low), as_tensor(high), as_tensor([(float(w), float(h)) for h, w in spatial_shapes]))


_LAYOUTS: dict[tuple, CanvasLayout] = constants.register({})


def canvas_layout(spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> CanvasLayout:
    """The layout for these level shapes in ``dtype``, built once per (shapes, device,
    dtype) and reused: its tensors are constants of the input size."""
    if torch.compiler.is_compiling():
        return _build_layout(spatial_shapes, device, dtype)
    key = (tuple((int(h), int(w)) for h, w in spatial_shapes), device, dtype)
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) > 64:  # many distinct input sizes (dynamic padding): keep it bounded
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = _build_layout(spatial_shapes, device, dtype)
    return layout


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def sample_canvas(value: Tensor, layout: CanvasLayout, grid: Tensor, attention_weights: Tensor) -> Tensor:
    """Bilinear samples of every level at once, weighted and summed per head.

    Args:
        value: ``[B, S, nH, hd]`` per-head values of all levels, flattened row-major.
        layout: the canvas of the levels (``canvas_layout``).
        grid: ``[B, Lq, nH, L, P, 2]`` locations in the canvas frame, already clamped to
            ``layout.low .. layout.high``.
        attention_weights: ``[B, Lq, nH, L, P]``.
    Returns:
        ``[B, Lq, nH * hd]`` in the wider of the value and grid dtypes.
    """
    batch, n_tokens, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = grid.shape
    # Sample in the wider of the two dtypes: a bf16 grid would misplace points by pixels.
    dtype = torch.promote_types(value.dtype, grid.dtype)
    # [B, S, nH, hd] -> [B*nH, hd, S + 1] (a zero token last) -> canvas [B*nH, hd, Hc, Wc]
    values = _cast(value.permute(0, 2, 3, 1).reshape(batch * n_heads, head_dim, n_tokens), dtype)
    canvas = F.pad(values, (0, 1)).index_select(2, layout.index).view(batch * n_heads, head_dim, layout.height,
                                                                      layout.width)
    # [B, Lq, nH, L, P, 2] -> [B*nH, Lq, L*P, 2]; weights -> [B*nH, 1, Lq, L*P]
    grids = _cast(grid.permute(0, 2, 1, 3, 4, 5).reshape(batch * n_heads, n_queries, n_levels * n_points, 2), dtype)
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(batch * n_heads, 1, n_queries, n_levels * n_points)
    sampled = F.grid_sample(canvas, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = (sampled * _cast(weights, dtype)).sum(-1)  # [B*nH, hd, Lq]
    return out.view(batch, n_heads * head_dim, n_queries).transpose(1, 2)


def sample_per_level(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                     attention_weights: Tensor) -> Tensor:
    """Same result as ``sample_canvas`` with one ``grid_sample`` per level (faster on the
    CPU, where one large sampling call thrashes the cache; more launches on a GPU)."""
    batch, n_tokens, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = sampling_locations.shape
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    # one layout change for all levels: [B, S, nH, hd] -> [B*nH, hd, S]
    values = _cast(value.permute(0, 2, 3, 1).reshape(batch * n_heads, head_dim, n_tokens), dtype)
    # [B, Lq, nH, L, P, 2] -> [B*nH, L, Lq, P, 2], in grid_sample's [-1, 1] convention
    grids = _cast((2 * sampling_locations - 1).permute(0, 2, 3, 1, 4, 5).reshape(batch * n_heads, n_levels, n_queries,
                                                                                n_points, 2), dtype)
    # [B, Lq, nH, L, P] -> [B*nH, L, 1, Lq, P]
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(batch * n_heads, n_levels, 1, n_queries, n_points)
    out = None
    start = 0
    for level, (h, w) in enumerate(spatial_shapes):
        v = values[:, :, start:start + h * w].unflatten(2, (h, w))  # [B*nH, hd, H, W]
        start += h * w
        sampled = F.grid_sample(v, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False)
        part = (sampled * _cast(weights[:, level], dtype)).sum(-1)  # [B*nH, hd, Lq]
        out = part if out is None else out + part
    return out.view(batch, n_heads * head_dim, n_queries).transpose(1, 2)


IMPLEMENTATIONS = ("fused", "canvas", "per_level")


def default_impl(device: torch.device) -> str:
    """The fastest available path: the fused Triton kernels on GPUs
    (``ms_deform_attn_triton``; ``DINO_MSDA_IMPL=pytorch`` turns them off), else the
    canvas on GPUs and one call per level on the CPU."""
    if ms_deform_attn_triton.available(device):
        return "fused"
    return "per_level" if device.type == "cpu" else "canvas"


# (device, value dtype, heads, head dim, levels, points) -> None if the fused kernels
# passed their self-check there, else what went wrong
_FUSED_VERDICTS: dict[tuple, str | None] = {}
_CHECK_SECONDS = [0.0]  # spent in first-use checks, kernel compiles included (self_check_seconds)
_CHECK_LOCK = threading.Lock()


def self_check_seconds() -> float:
    """Seconds this process spent in ``check_fused`` so far (the kernels' compile included)."""
    return _CHECK_SECONDS[0]

# The self-check's tolerance, a fraction of the reference's largest magnitude. Both paths
# sample the same (already rounded) values and accumulate in float32, so the output and
# the location and weight gradients differ only by summation order (measured: about 1e-6
# of scale, bench/results/). The value gradient is handed back in the value's dtype and so
# also carries one rounding to it, at most the dtype's unit roundoff of the scale.
CHECK_TOLERANCE = 1e-4
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
CHECK_QUERIES = 100  # two query tiles of the kernels (BLOCK_Q 64), the second partial


def check_tolerance(what: str, value_dtype: torch.dtype) -> float:
    """Largest accepted ``|fused - reference| / scale`` for ``what`` (``output``,
    ``grad value``, ``grad locations``, ``grad weights``) with values in ``value_dtype``."""
    if what == "grad value":
        return CHECK_TOLERANCE + UNIT_ROUNDOFF.get(value_dtype, 2.0**-8)
    return CHECK_TOLERANCE


def generic_locations(shape: tuple[int, ...], spatial_shapes: list[tuple[int, int]], device: torch.device,
                      seed: int = 0, beyond: int = 2) -> Tensor:
    """``[B, Lq, nH, L, P, 2]`` locations at least 0.1 pixel away from any whole pixel
    position, spread over each level and ``beyond`` pixels past its borders (0: all
    inside [0, 1]).

    Bilinear sampling has kinks at whole pixels, where the location gradient jumps
    between two one-sided derivatives; a trained model's inputs sit exactly there at
    initialisation (offsets of whole pixels around pixel centres), so comparing
    gradients on them compares two valid but different answers. These points keep every
    comparison well defined.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([(w, h) for h, w in spatial_shapes], dtype=torch.float64).view(-1, 1, 2)  # [L, 1, 2]
    whole = torch.floor(torch.rand(shape, generator=gen, dtype=torch.float64) * (sizes + 2 * beyond)) - beyond
    pixel = whole + 0.1 + 0.8 * torch.rand(shape, generator=gen, dtype=torch.float64)
    return ((pixel + 0.5) / sizes).to(device, torch.float32)


def check_fused(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                attention_weights: Tensor, fused=None, max_queries: int = CHECK_QUERIES) -> str | None:
    """Run the fused kernels forward and backward beside ``sample_per_level`` in float32
    on a slice of the real call: its values (first image) and weights (up to
    ``max_queries`` queries), with ``generic_locations`` in place of its locations.

    The slice keeps every compile-time constant of the real call, so this compiles exactly
    the kernels the run needs, once, and checks them on this GPU. Returns None when values
    and gradients agree within ``check_tolerance``, else what went wrong: a compile or
    launch error, or the largest mismatch.
    """
    fused = fused or ms_deform_attn_triton.ms_deform_attn_fused
    device_type = value.device.type
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
        value = value[:1].detach().clone()
        weights = attention_weights[:1, :max_queries].detach().float().clone()
        locations = generic_locations((*weights.shape, 2), spatial_shapes, value.device)
        results = []
        for name, fn, v in (("fused", fused, value), ("reference", sample_per_level, value.float())):
            leaves = [t.clone().requires_grad_() for t in (v, locations, weights)]
            try:
                out = fn(leaves[0], spatial_shapes, leaves[1], leaves[2])
                grad = torch.linspace(-1.0, 1.0, out.numel(), device=out.device).view(out.shape)
                (out.float() * grad).sum().backward()
            except Exception as exc:  # noqa: BLE001 - any compile/launch failure means "do not use"
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                return f"{name} path raised {type(exc).__name__}: {first_line}"[:300]
            missing = [n for n, t in zip(("value", "locations", "weights"), leaves) if t.grad is None]
            if missing:
                return f"{name} path gave no gradient for {', '.join(missing)}"
            results.append([out.detach().float()] + [t.grad.float() for t in leaves])
    for what, got, expected in zip(("output", "grad value", "grad locations", "grad weights"), *results):
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        error = float((got - expected).abs().max()) if expected.numel() else 0.0
        if not math.isfinite(error) or error > check_tolerance(what, value.dtype) * max(scale, 1e-3):
            return (f"{what} differs from grid_sample by {error:.3g} (scale {scale:.3g}, tolerance "
                    f"{check_tolerance(what, value.dtype):.2g} of scale)")
    return None


@graph_break
def fused_usable(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                 attention_weights: Tensor) -> bool:
    """Whether the default path may use the fused kernels for calls like this one: the
    first such call runs ``check_fused``; a failure warns once and the run continues on
    the ``canvas`` path (a GPU Triton cannot compile for, a broken toolchain)."""
    key = (value.device, value.dtype, *value.shape[2:], *sampling_locations.shape[3:5])
    if key not in _FUSED_VERDICTS:
        with _CHECK_LOCK:  # a check running in another thread (dino.warm) is waited for, not repeated
            if key not in _FUSED_VERDICTS:
                _record_verdict(key, value, spatial_shapes, sampling_locations, attention_weights)
    return _FUSED_VERDICTS[key] is None


def _record_verdict(key: tuple, value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                    attention_weights: Tensor) -> None:
    """Run ``check_fused`` for ``key``, count its seconds, keep its verdict (last: a reader
    outside the lock sees a key only once its verdict is in) and warn on a failure."""
    began = time.perf_counter()
    problem = check_fused(value, spatial_shapes, sampling_locations, attention_weights)
    _CHECK_SECONDS[0] += time.perf_counter() - began
    _FUSED_VERDICTS[key] = problem
    if problem:
        name = torch.cuda.get_device_name(value.device) if value.device.type == "cuda" else str(value.device)
        warnings.warn(f"fused deformable attention failed its self-check on {name} ({problem}); using the "
                      "PyTorch grid_sample path instead (set DINO_MSDA_IMPL=pytorch to skip the check)",
                      RuntimeWarning, stacklevel=3)


def resolve_impl(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                 attention_weights: Tensor, impl: str | None = None) -> str:
    """The path a call takes: ``impl`` when given, else ``default_impl`` with the fused
    kernels only once they passed ``check_fused`` for calls like this one."""
    if impl is None:
        impl = default_impl(value.device)
        if impl == "fused" and not fused_usable(value, spatial_shapes, sampling_locations, attention_weights):
            impl = "canvas"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown deformable attention implementation {impl!r}; choose from {IMPLEMENTATIONS}")
    return impl


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    impl: str | None = None,
) -> Tensor:
    """Sample ``value`` bilinearly and take the weighted sum per head.

    Args:
        value: ``[B, S, nH, hd]`` per-head values of all levels, flattened row-major.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``; ``sum(H_l * W_l) == S``.
        sampling_locations: ``[B, Lq, nH, L, P, 2]`` (x, y) in [0, 1] of the padded map,
            pixel centres at ``(i + 0.5) / W`` (``align_corners=False``). Outside the
            map samples read zero.
        attention_weights: ``[B, Lq, nH, L, P]``, normalised over ``L * P``.
        impl: ``fused`` (Triton kernels), ``canvas`` (one ``grid_sample`` over all
            levels) or ``per_level``; default ``default_impl(value.device)``, with the
            fused kernels only once they pass ``check_fused`` on this device. All three
            give the same values up to rounding.
    Returns:
        ``[B, Lq, nH * hd]``.
    """
    impl = resolve_impl(value, spatial_shapes, sampling_locations, attention_weights, impl)
    if impl == "fused":
        return ms_deform_attn_triton.ms_deform_attn_fused(value, spatial_shapes, sampling_locations,
                                                          attention_weights)
    if impl == "per_level":
        return sample_per_level(value, spatial_shapes, sampling_locations, attention_weights)
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    layout = canvas_layout(spatial_shapes, value.device, dtype)
    grid = torch.addcmul(layout.shift, _cast(sampling_locations, dtype), layout.scale).clamp(layout.low, layout.high)
    return sample_canvas(value, layout, grid, attention_weights)


class MSDeformAttn(nn.Module):
    """Deformable attention module over ``n_levels`` feature maps.

    Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``) are the ones TAO's ``linear_proj_names`` select for a reduced
    learning rate.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"hidden_dim ({d_model}) must be divisible by nheads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.impl: str | None = None  # a forced path (``IMPLEMENTATIONS``); None: ``resolve_impl``'s choice
        self.last_impl: str | None = None  # the path the last forward took (``attention_paths``)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start as a fixed star: head k points in direction 2*pi*k/nH, point i at
        # distance i+1 (pixels of that level); attention starts uniform.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Args:
            query: ``[B, Lq, C]`` (content + position).
            reference_points: ``[B, Lq, L, 2]`` points (x, y) or ``[B, Lq, L, 4]`` boxes
                (cx, cy, w, h), normalised to the padded map of each level.
            value: ``[B, S, C]`` flattened memory.
            spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
            padding_mask: ``[B, S]`` True on padded tokens (they contribute zero).
        Returns:
            ``[B, Lq, C]``.
        """
        batch, n_queries, _ = query.shape
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(batch, v.shape[1], self.n_heads, self.d_model // self.n_heads)

        # Locations need more precision than bf16/fp16 gives (1/256 of the map is several
        # pixels on a large level), so the offset projection runs in float32.
        precise = torch.promote_types(self.sampling_offsets.weight.dtype, torch.float32)
        layout = canvas_layout(spatial_shapes, query.device, precise)
        n_ref = reference_points.shape[-1]
        if n_ref not in (2, 4):
            raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")
        with torch.autocast(device_type=query.device.type, enabled=False):
            offsets = self.sampling_offsets(_cast(query, precise)).view(
                batch, n_queries, self.n_heads, self.n_levels, self.n_points, 2
            )
            ref = _cast(reference_points, precise).reshape(batch, n_queries, 1, self.n_levels, 1, n_ref)
            if n_ref == 2:
                # offsets are in pixels of each level
                locations = ref + offsets / layout.sizes
            else:
                # offsets are relative to the box's half size, spread over the points
                locations = ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5

        weights = self.attention_weights(query).view(batch, n_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.to(precise).softmax(-1).view(batch, n_queries, self.n_heads, self.n_levels, self.n_points)
        impl = self.last_impl = resolve_impl(v, spatial_shapes, locations, weights, self.impl)
        out = ms_deform_attn_core(v, spatial_shapes, locations, weights, impl=impl)
        return self.output_proj(out)


def attention_paths(model: nn.Module) -> list[str]:
    """The deformable-attention paths ``model``'s last forward passes took, sorted
    (``["fused"]`` when every layer ran the kernels; ``[]`` before any forward). Speed
    figures name this, read after the timed steps, not the path that was asked for."""
    return sorted({m.last_impl for m in model.modules() if isinstance(m, MSDeformAttn) and m.last_impl})


def force_impl(model: nn.Module, impl: str | None) -> None:
    """Every deformable attention of ``model`` takes ``impl`` (None: the default choice)."""
    if impl is not None and impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown deformable attention implementation {impl!r}; choose from {IMPLEMENTATIONS}")
    for m in model.modules():
        if isinstance(m, MSDeformAttn):
            m.impl = impl
