"""Sine position encodings.

Two uses:
  * ``PositionEmbeddingSine`` encodes every pixel of a feature map (for the encoder's
    keys and queries), normalised by the *valid* (unpadded) extent so a padded image
    and the same image unpadded get the same codes on their shared pixels;
  * ``sine_embed_boxes`` encodes decoder anchor boxes ``(cx, cy, w, h)`` so the
    decoder's positional queries follow the boxes as they are refined (DAB-DETR).

DINO uses separate temperatures for the y and x halves (``pe_temperatureH`` /
``pe_temperatureW``, 20 in TAO's specs instead of DETR's 10000).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _interleave_sin_cos(pos: Tensor) -> Tensor:
    """``[..., F]`` angles -> ``[..., F]`` with sin on even and cos on odd features."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Per-pixel sine/cosine code of (y, x) positions.

    Args:
        num_pos_feats: features per axis; the output has ``2 * num_pos_feats`` channels
            (``hidden_dim // 2`` gives ``hidden_dim``).
        temperature_h / temperature_w: wavelength bases of the y and x halves.
    """

    def __init__(self, num_pos_feats: int = 128, temperature_h: float = 20.0, temperature_w: float = 20.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature_h = temperature_h
        self.temperature_w = temperature_w
        self.scale = 2 * math.pi

    def _dim_t(self, temperature: float, device: torch.device) -> Tensor:
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)

    def forward(self, mask: Tensor) -> Tensor:
        """Args:
            mask: ``[B, H, W]`` bool, True on padding.
        Returns:
            ``[B, 2 * num_pos_feats, H, W]`` float32 codes (y half first, then x half).
        """
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        eps = 1e-6
        # Normalise to (0, 2*pi] over the valid region; centres of pixels at (i - 0.5).
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        pos_y = _interleave_sin_cos(y_embed[..., None] / self._dim_t(self.temperature_h, mask.device))
        pos_x = _interleave_sin_cos(x_embed[..., None] / self._dim_t(self.temperature_w, mask.device))
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_embed_boxes(boxes: Tensor, hidden_dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine code of normalised anchors for the decoder's positional queries.

    Args:
        boxes: ``[..., 4]`` (cx, cy, w, h) in [0, 1] (or ``[..., 2]`` points).
        hidden_dim: model width; each coordinate gets ``hidden_dim // 2`` features.
    Returns:
        ``[..., 2 * hidden_dim]`` for boxes (``hidden_dim`` for points), ordered
        (y, x, w, h) as in DAB-DETR.
    """
    num_feats = hidden_dim // 2
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    angles = boxes.to(torch.float32)[..., None] * (2 * math.pi) / dim_t  # [..., 4, F]
    codes = _interleave_sin_cos(angles)
    order = [1, 0] + list(range(2, boxes.shape[-1]))
    return codes[..., order, :].flatten(-2)
