"""Multi-scale deformable attention (Zhu et al., Deformable DETR), pure PyTorch.

Each query looks at only ``n_points`` sampled locations per head and feature level,
placed around its reference point by learned offsets, and mixes them with learned
weights (softmax over levels x points). Sampling is bilinear via ``F.grid_sample``,
so no custom CUDA kernel is needed and it runs on CPU too.

Shapes used throughout:
  ``S = sum(H_l * W_l)`` flattened memory tokens, ``Lq`` queries, ``L`` levels,
  ``P`` points, ``nH`` heads, ``hd = d_model / nH``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Sample ``value`` bilinearly and take the weighted sum per head.

    Args:
        value: ``[B, S, nH, hd]`` per-head values of all levels, flattened row-major.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``; ``sum(H_l * W_l) == S``.
        sampling_locations: ``[B, Lq, nH, L, P, 2]`` (x, y) in [0, 1] of the padded map,
            pixel centres at ``(i + 0.5) / W`` (``align_corners=False``). Outside the
            map samples read zero.
        attention_weights: ``[B, Lq, nH, L, P]``, normalised over ``L * P``.
    Returns:
        ``[B, Lq, nH * hd]``.
    """
    batch, n_tokens, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = sampling_locations.shape
    # Sample in the wider of the two dtypes: a bf16 grid would misplace points by pixels.
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    # one layout change for all levels: [B, S, nH, hd] -> [B*nH, hd, S]
    values = value.permute(0, 2, 3, 1).reshape(batch * n_heads, head_dim, n_tokens).to(dtype)
    # [B, Lq, nH, L, P, 2] -> [B*nH, L, Lq, P, 2], in grid_sample's [-1, 1] convention
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 1, 4, 5).reshape(batch * n_heads, n_levels, n_queries,
                                                                           n_points, 2).to(dtype)
    # [B, Lq, nH, L, P] -> [B*nH, L, 1, Lq, P]
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(batch * n_heads, n_levels, 1, n_queries, n_points)
    out = None
    start = 0
    for level, (h, w) in enumerate(spatial_shapes):
        v = values[:, :, start:start + h * w].unflatten(2, (h, w))  # [B*nH, hd, H, W]
        start += h * w
        sampled = F.grid_sample(v, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False)
        part = (sampled * weights[:, level].to(dtype)).sum(-1)  # [B*nH, hd, Lq]
        out = part if out is None else out + part
    return out.view(batch, n_heads * head_dim, n_queries).transpose(1, 2)


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
        with torch.autocast(device_type=query.device.type, enabled=False):
            offsets = self.sampling_offsets(query.to(precise)).view(
                batch, n_queries, self.n_heads, self.n_levels, self.n_points, 2
            )
            ref = reference_points.to(precise)[:, :, None, :, None, :]  # [B, Lq, 1, L, 1, 2|4]
            if reference_points.shape[-1] == 2:
                # offsets are in pixels of each level
                normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=precise, device=query.device)
                locations = ref + offsets / normalizer[None, None, None, :, None, :]
            elif reference_points.shape[-1] == 4:
                # offsets are relative to the box's half size, spread over the points
                locations = ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5
            else:
                raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")

        weights = self.attention_weights(query).view(batch, n_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.to(precise).softmax(-1).view(batch, n_queries, self.n_heads, self.n_levels, self.n_points)
        out = ms_deform_attn_core(v, spatial_shapes, locations, weights)
        return self.output_proj(out)
