"""Two-stage mixed query selection (DINO Sec. 3.3).

Every encoder token proposes a box: a fixed anchor at its pixel (size ``0.05 * 2**level``)
refined by a small head. The ``num_queries`` tokens with the highest class score become
the decoder's initial anchors (positional queries); the content queries stay learnable
embeddings (``embed_init_tgt``), because selected encoder features are noisy content.
The selected proposals themselves are supervised ("interm" losses).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dino.models.deformable_transformer import MLP, token_grid, valid_frame_centres

# Proposals whose centre or size falls outside (0.01, 0.99) are not selectable.
_PROPOSAL_MIN, _PROPOSAL_MAX = 0.01, 0.99


def _anchor_sizes(levels: Tensor) -> Tensor:
    """``[S]`` level index -> ``[1, S, 2]`` anchor (w, h) ``0.05 * 2**level``."""
    return (0.05 * torch.pow(2.0, levels.to(torch.float32)))[None, :, None].expand(1, -1, 2)


def encoder_proposals(spatial_shapes: list[tuple[int, int]], valid_ratios: Tensor,
                      padding_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Anchor box of every memory token.

    Args:
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
        valid_ratios: ``[B, L, 2]`` (w, h) unpadded fraction per level.
        padding_mask: ``[B, S]`` True on padding.
    Returns:
        ``(anchors [B, S, 4], valid [B, S])``: anchors in logit space (cx, cy, w, h
        relative to the unpadded image; 0 where invalid), ``valid`` False on padding and
        on anchors too close to the border.
    """
    _, _, levels = token_grid(spatial_shapes, valid_ratios.device)
    centres = valid_frame_centres(spatial_shapes, valid_ratios)  # [B, S, 2]
    sizes = _anchor_sizes(levels).expand_as(centres)
    anchors = torch.cat((centres, sizes), -1)  # [B, S, 4]
    valid = ((anchors > _PROPOSAL_MIN) & (anchors < _PROPOSAL_MAX)).all(-1) & ~padding_mask
    logits = torch.log(anchors / (1 - anchors)).masked_fill(~valid[..., None], 0.0)
    return logits, valid


class QuerySelection(nn.Module):
    """Scores encoder tokens, keeps the top ``num_queries`` as decoder anchors.

    Parameters: ``enc_output`` + ``enc_output_norm`` (token transform),
    ``enc_out_class_embed`` / ``enc_out_bbox_embed`` (proposal heads, not shared with the
    decoder's), ``tgt_embed`` (learnable content queries).
    """

    def __init__(self, d_model: int, num_queries: int, num_classes: int, embed_init_tgt: bool = True):
        super().__init__()
        self.num_queries = num_queries
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.enc_out_class_embed = nn.Linear(d_model, num_classes)
        self.enc_out_bbox_embed = MLP(d_model, d_model, 4, 3)
        self.tgt_embed = nn.Embedding(num_queries, d_model) if embed_init_tgt else None
        prior = 0.01  # every class starts at p = 0.01 so focal loss is not swamped by negatives
        nn.init.constant_(self.enc_out_class_embed.bias, -math.log((1 - prior) / prior))
        nn.init.zeros_(self.enc_out_bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.enc_out_bbox_embed.layers[-1].bias)
        if self.tgt_embed is not None:
            nn.init.normal_(self.tgt_embed.weight)

    def rank(self, scores: Tensor) -> Tensor:
        """``scores [B, S]`` (-inf where not selectable) -> ``[B, Q]`` indices of the
        ``num_queries`` best, best first. Proposals whose scores differ by rounding may
        come out in either order, and each rank seeds a different decoder query: outputs
        per query are not continuous in the input (``dino.export`` pins this choice when
        it compares ONNX Runtime with PyTorch)."""
        return scores.topk(self.num_queries, dim=1).indices

    def forward(self, memory: Tensor, padding_mask: Tensor, spatial_shapes: list[tuple[int, int]],
                valid_ratios: Tensor) -> dict[str, Tensor]:
        """Args:
            memory: ``[B, S, C]`` encoder output; padding_mask: ``[B, S]``;
            valid_ratios: ``[B, L, 2]``.
        Returns dict with
            ``tgt`` ``[B, Q, C]`` content queries,
            ``ref_logits`` ``[B, Q, 4]`` detached anchors in logit space,
            ``interm_logits`` ``[B, Q, num_classes]`` and ``interm_boxes`` ``[B, Q, 4]``
            (sigmoid cxcywh) of the selected proposals, for the interm losses.
        """
        batch, n_tokens, d_model = memory.shape
        if n_tokens < self.num_queries:
            raise ValueError(
                f"model.num_queries={self.num_queries} exceeds the {n_tokens} encoder tokens of this input; "
                "use larger images or fewer queries"
            )
        anchors, valid = encoder_proposals(spatial_shapes, valid_ratios, padding_mask)
        tokens = self.enc_output_norm(self.enc_output(memory.masked_fill(~valid[..., None], 0.0)))
        logits = self.enc_out_class_embed(tokens)  # [B, S, K]
        scores = logits.max(-1).values.float().masked_fill(~valid, float("-inf"))
        topk = self.rank(scores)  # [B, Q]

        def take(x: Tensor) -> Tensor:
            return x.gather(1, topk[..., None].expand(-1, -1, x.shape[-1]))

        selected = take(tokens)
        box_logits = self.enc_out_bbox_embed(selected).float() + take(anchors)
        if self.tgt_embed is not None:
            tgt = self.tgt_embed.weight[None].expand(batch, -1, -1)
        else:
            tgt = selected.detach()
        return {
            "tgt": tgt,
            "ref_logits": box_logits.detach(),
            "interm_logits": take(logits),
            "interm_boxes": box_logits.sigmoid(),
        }
