"""Deformable encoder and the DINO decoder (iterative box refinement, look forward twice).

Post-norm layers as in Deformable DETR / DINO (``pre_norm`` is not implemented).
Notation: ``B`` batch, ``S`` memory tokens over all ``L`` levels, ``Q`` decoder queries
(denoising queries first, then matching queries), ``C`` hidden width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models import constants
from dino.models.ms_deform_attn import MSDeformAttn
from dino.models.position_encoding import sine_embed_boxes


def dropout_or_identity(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or a no-op module when ``p == 0`` (DINO's default): one module
    call less per use, dozens per step, and the same parameters and state dict."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


_TOKEN_GRIDS: dict[tuple, tuple[Tensor, Tensor, Tensor]] = constants.register({})


def token_grid(spatial_shapes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Constants of the flattened multi-level token axis, built once per (shapes, device).

    Returns:
        ``centres [S, 2]`` pixel centres (x + 0.5, y + 0.5) in each token's level,
        ``sizes [S, 2]`` that level's (W_l, H_l), ``levels [S]`` the level index (int64).
    """
    key = (tuple((int(h), int(w)) for h, w in spatial_shapes), device)
    cached = None if torch.compiler.is_compiling() else _TOKEN_GRIDS.get(key)
    if cached is None:
        centres, sizes, levels = [], [], []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                                    torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
            centres.append(torch.stack((xs, ys), -1).reshape(-1, 2))
            sizes.append(torch.tensor([[float(w), float(h)]]).expand(h * w, 2))
            levels.append(torch.full((h * w,), lvl, dtype=torch.int64))
        cached = tuple(torch.cat(parts).to(device) for parts in (centres, sizes, levels))
        if not torch.compiler.is_compiling():
            if len(_TOKEN_GRIDS) > 64:  # many input sizes (dynamic padding): keep it bounded
                _TOKEN_GRIDS.clear()
            _TOKEN_GRIDS[key] = cached
    return cached


def valid_frame_centres(spatial_shapes: list[tuple[int, int]], valid_ratios: Tensor) -> Tensor:
    """``[B, S, 2]`` every token's pixel centre normalised by the valid (unpadded) extent
    of its level: ``(x + 0.5) / (valid_ratio_w * W_l)``, likewise y."""
    centres, sizes, levels = token_grid(spatial_shapes, valid_ratios.device)
    return centres / (valid_ratios.index_select(1, levels) * sizes)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (box head, ref-point head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class FeedForward(nn.Module):
    """Residual two-layer FFN with post-norm: ``norm(x + W2 drop(relu(W1 x)))``."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout1 = dropout_or_identity(dropout)
        self.dropout2 = dropout_or_identity(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = dropout_or_identity(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ffn, dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]],
                padding_mask: Tensor) -> Tensor:
        """src, pos: ``[B, S, C]``; reference_points: ``[B, S, L, 2]``; padding_mask: ``[B, S]``."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        return self.ffn(self.norm(src + self.dropout(attn)))


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, d_ffn, dropout, n_levels, n_heads, n_points) for _ in range(num_layers)
        )

    @staticmethod
    def reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: Tensor) -> Tensor:
        """Pixel centres of every level, as seen from every level.

        Args:
            valid_ratios: ``[B, L, 2]`` (w, h) fraction of each map that is not padding.
        Returns:
            ``[B, S, L, 2]`` (x, y) normalised to each level's padded map.
        """
        ref = valid_frame_centres(spatial_shapes, valid_ratios)  # [B, S, 2] in the valid frame
        return ref[:, :, None] * valid_ratios[:, None]

    def forward(self, src: Tensor, pos: Tensor, spatial_shapes: list[tuple[int, int]], valid_ratios: Tensor,
                padding_mask: Tensor) -> Tensor:
        """src, pos: ``[B, S, C]``; returns the memory ``[B, S, C]``."""
        ref = self.reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, padding_mask)
        return src


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention into memory, FFN."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout1 = dropout_or_identity(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout2 = dropout_or_identity(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ffn, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor,
                spatial_shapes: list[tuple[int, int]], memory_padding_mask: Tensor,
                self_attn_mask: Tensor | None) -> Tensor:
        """tgt, query_pos: ``[B, Q, C]``; reference_points: ``[B, Q, L, 4]``;
        self_attn_mask: ``[Q, Q]`` bool, True where a query may NOT look, or the same as a
        float mask (-inf where blocked, 0 elsewhere)."""
        attn = self._self_attention(tgt, query_pos, self_attn_mask)
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, memory_padding_mask)
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.ffn(tgt)

    def _self_attention(self, tgt: Tensor, query_pos: Tensor, mask: Tensor | None) -> Tensor:
        """``self_attn(tgt + query_pos, tgt + query_pos, tgt)`` computed from its own
        parameters in a few calls: ``nn.MultiheadAttention.forward``'s argument handling
        dispatches about 27 more operators a layer, each a kernel launch on a GPU, where
        the decoder is launch-bound. Same values; parameter names unchanged.

        tgt, query_pos: ``[B, Q, C]``; mask: ``[Q, Q]`` as in ``forward``. Returns ``[B, Q, C]``."""
        mha = self.self_attn
        batch, n_queries, channels = tgt.shape
        heads = mha.num_heads
        if mask is not None and mask.dtype == torch.bool:  # True = blocked here, the opposite of SDPA's bool masks
            mask = torch.zeros(mask.shape, dtype=tgt.dtype, device=tgt.device).masked_fill_(mask, float("-inf"))
        weight, bias = mha.in_proj_weight, mha.in_proj_bias
        qk = F.linear(tgt + query_pos, weight[:2 * channels], bias[:2 * channels])  # [B, Q, 2C]: queries and keys
        v = F.linear(tgt, weight[2 * channels:], bias[2 * channels:])
        q, k = qk.view(batch, n_queries, 2, heads, channels // heads).permute(2, 0, 3, 1, 4).unbind(0)  # [B, nH, Q, hd]
        v = v.view(batch, n_queries, heads, channels // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=mha.dropout if self.training else 0.0)
        return mha.out_proj(out.transpose(1, 2).reshape(batch, n_queries, channels))


class DeformableDecoder(nn.Module):
    """Decoder whose queries carry anchor boxes that every layer refines.

    The box head ``bbox_embed`` (shared by all layers, as in DINO) predicts a logit-space
    delta. Layer ``i`` samples around the *detached* box of layer ``i-1``; its prediction
    adds the delta to the *undetached* box of layer ``i-1``, so the loss of layer ``i``
    also trains layer ``i-1`` ("look forward twice", DINO Sec. 3.5).
    """

    def __init__(self, num_layers: int, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, d_ffn, dropout, n_levels, n_heads, n_points) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)  # start at the anchors
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(self, tgt: Tensor, ref_logits: Tensor, memory: Tensor, spatial_shapes: list[tuple[int, int]],
                valid_ratios: Tensor, memory_padding_mask: Tensor,
                self_attn_mask: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Args:
            tgt: ``[B, Q, C]`` content queries.
            ref_logits: ``[B, Q, 4]`` initial anchors (cx, cy, w, h) in logit space, detached.
            memory: ``[B, S, C]``; valid_ratios: ``[B, L, 2]``; memory_padding_mask: ``[B, S]``.
            self_attn_mask: ``[Q, Q]`` bool (denoising groups), or None.
        Returns:
            ``(hs, boxes)``: per layer, normalised hidden states ``[B, Q, C]`` and predicted
            boxes ``[B, Q, 4]`` (sigmoid, cxcywh, relative to the unpadded image).
        """
        ratios4 = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        if self_attn_mask is not None and self_attn_mask.dtype == torch.bool:
            # converted once here rather than by nn.MultiheadAttention in every layer
            self_attn_mask = torch.zeros(self_attn_mask.shape, dtype=tgt.dtype, device=tgt.device).masked_fill_(
                self_attn_mask, float("-inf"))
        ref_in = ref_logits  # detached input anchors of the current layer
        prev = ref_logits  # undetached boxes of the previous layer
        hs, boxes = [], []
        out = tgt
        for layer in self.layers:
            ref_points = ref_in.sigmoid()[:, :, None] * ratios4  # [B, Q, L, 4] in padded frames
            query_pos = self.ref_point_head(sine_embed_boxes(ref_points[:, :, 0], self.d_model))
            out = layer(out, query_pos, ref_points, memory, spatial_shapes, memory_padding_mask, self_attn_mask)
            h = self.norm(out)
            delta = self.bbox_embed(h).float()
            boxes.append((prev + delta).sigmoid())
            hs.append(h)
            prev = ref_in + delta
            ref_in = prev.detach()
        return hs, boxes
