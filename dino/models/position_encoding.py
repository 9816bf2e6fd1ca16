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

from dino.models import constants

_FREQUENCIES: dict[tuple, tuple[Tensor, Tensor]] = constants.register({})


def sine_frequencies(num_feats: int, temperature: float, scale: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(freq [F], phase [F])`` so that ``sin(x * freq + phase)`` is the interleaved code
    ``sin(x * scale / t_0), cos(x * scale / t_0), sin(x * scale / t_2), ...`` with
    ``t_i = temperature ** (2 * (i // 2) / F)`` (cos as a sine shifted by pi/2: one kernel
    instead of slicing, two transcendental kernels and a stack). Constants of the
    model, built once per device."""
    key = (num_feats, float(temperature), float(scale), device)
    cached = None if torch.compiler.is_compiling() else _FREQUENCIES.get(key)
    if cached is None:
        dim_t = torch.arange(num_feats, dtype=torch.float64)
        dim_t = float(temperature) ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
        phase = (torch.arange(num_feats) % 2).to(torch.float64) * (math.pi / 2)
        cached = ((scale / dim_t).to(device, torch.float32), phase.to(device, torch.float32))
        if not torch.compiler.is_compiling():
            _FREQUENCIES[key] = cached
    return cached


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
        # Normalise to (0, 1] over the valid region (2*pi is in the frequencies); centres
        # of pixels at (i - 0.5).
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps)
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps)
        freq_y, phase_y = sine_frequencies(self.num_pos_feats, self.temperature_h, self.scale, mask.device)
        freq_x, phase_x = sine_frequencies(self.num_pos_feats, self.temperature_w, self.scale, mask.device)
        pos_y = torch.addcmul(phase_y, y_embed[..., None], freq_y)
        pos_x = torch.addcmul(phase_x, x_embed[..., None], freq_x)
        return torch.cat((pos_y, pos_x), dim=3).sin_().permute(0, 3, 1, 2)


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
    freq, phase = sine_frequencies(num_feats, temperature, 2 * math.pi, boxes.device)
    n_coords = boxes.shape[-1]
    # (x, y, ...) -> (y, x, ...) by a cached index: one gather, no host->device list copy
    order = _coordinate_order(n_coords, boxes.device)
    angles = torch.addcmul(phase, boxes.to(torch.float32).index_select(-1, order)[..., None], freq)  # [..., 4, F]
    return angles.sin().flatten(-2)


_ORDERS: dict[tuple, Tensor] = constants.register({})


def _coordinate_order(n_coords: int, device: torch.device) -> Tensor:
    key = (n_coords, device)
    order = None if torch.compiler.is_compiling() else _ORDERS.get(key)
    if order is None:
        order = torch.tensor([1, 0] + list(range(2, n_coords)), device=device)
        if not torch.compiler.is_compiling():
            _ORDERS[key] = order
    return order
