"""The DINO detector: backbone -> deformable encoder -> query selection -> decoder -> heads.

One forward pass (training)::

    images [B,3,H,W] --ResNet--> stages --1x1 conv+GN--> L maps [B,C,H_l,W_l] (+ strided 3x3 convs)
      flatten + level embedding --encoder--> memory [B,S,C]
      memory --QuerySelection--> Q anchors + content queries (+ interm predictions)
      [denoising queries | matching queries] --decoder--> per layer hidden [B,P+Q,C], boxes
      class head per layer --> logits; split off the denoising part
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models.backbone import Joiner
from dino.models.deformable_transformer import DeformableDecoder, DeformableEncoder, token_grid
from dino.models.dn_components import ContrastiveDenoising
from dino.models.query_selection import QuerySelection


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class DINO(nn.Module):
    """DETR with Improved deNoising anchOr boxes (Zhang et al. 2022).

    Args:
        backbone: ``Joiner`` of ResNet and position encoding.
        encoder / decoder / query_selection: the transformer parts.
        denoising: contrastive denoising generator, or None to train without it.
        num_classes: width of the class logits.
        num_feature_levels: ``L``; levels beyond the backbone's are strided 3x3 convs.
        aux_loss: return every decoder layer's predictions for deep supervision.
    """

    def __init__(self, backbone: Joiner, encoder: DeformableEncoder, decoder: DeformableDecoder,
                 query_selection: QuerySelection, denoising: ContrastiveDenoising | None, num_classes: int,
                 num_feature_levels: int, aux_loss: bool = True):
        super().__init__()
        hidden_dim = decoder.d_model
        self.backbone = backbone
        self.encoder = encoder
        self.query_selection = query_selection
        self.decoder = decoder
        self.denoising = denoising
        self.num_queries = query_selection.num_queries
        self.aux_loss = aux_loss
        # denoising queries laid out in a fixed number of slots (ContrastiveDenoising.slots_for),
        # so that the decoder's shapes do not follow the targets (GraphedDecode sets it);
        # None: each batch's own layout
        self.denoising_slots: int | None = None

        in_channels = list(backbone.num_channels)
        projections = [nn.Sequential(nn.Conv2d(c, hidden_dim, 1), _group_norm(hidden_dim)) for c in in_channels]
        for i in range(num_feature_levels - len(in_channels)):
            c = in_channels[-1] if i == 0 else hidden_dim
            projections.append(nn.Sequential(nn.Conv2d(c, hidden_dim, 3, stride=2, padding=1), _group_norm(hidden_dim)))
        self.input_proj = nn.ModuleList(projections)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, hidden_dim))
        self.class_embed = nn.Linear(hidden_dim, num_classes)  # shared by all decoder layers

        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        nn.init.normal_(self.level_embed)
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior p = 0.01

    def _multiscale_inputs(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor, list, Tensor]:
        """-> ``src [B,S,C]``, ``pos [B,S,C]`` (with level embedding), ``mask [B,S]``,
        spatial shapes (``L`` pairs), ``valid_ratios [B,L,2]`` (w, h)."""
        levels, pos = self.backbone(images, masks)
        srcs, lvl_masks = [proj(feat) for proj, (feat, _) in zip(self.input_proj, levels)], [m for _, m in levels]
        for proj in self.input_proj[len(levels):]:
            srcs.append(proj(levels[-1][0] if len(srcs) == len(levels) else srcs[-1]))
            lvl_masks.append(F.interpolate(masks[None].float(), size=srcs[-1].shape[-2:]).to(torch.bool)[0])
            pos.append(self.backbone[1](lvl_masks[-1]))
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        _, _, levels = token_grid(shapes, src.device)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1) + self.level_embed.index_select(0, levels)
        mask = torch.cat([m.flatten(1) for m in lvl_masks], 1)
        valid_ratios = torch.stack([self._valid_ratio(m) for m in lvl_masks], 1)
        return src, pos_flat.to(src.dtype), mask, shapes, valid_ratios

    @staticmethod
    def _valid_ratio(mask: Tensor) -> Tensor:
        """``[B, H, W]`` padding mask (image top-left) -> ``[B, 2]`` unpadded (w, h) fraction."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / h
        valid_w = (~mask[:, 0, :]).sum(1).float() / w
        return torch.stack([valid_w, valid_h], -1)

    def forward(self, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict:
        """Args:
            images: ``[B, 3, H, W]`` normalised; masks: ``[B, H, W]`` bool, True on padding.
            targets: training only; B dicts ``labels [n_b]``, ``boxes [n_b, 4]`` (cxcywh
                relative to the unpadded image). Needed for denoising.
        Returns dict:
            ``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]`` (sigmoid cxcywh) of the last layer;
            ``aux_outputs``: list of the same for layers 0..L-2 (when aux_loss);
            ``interm_outputs``: the selected encoder proposals;
            ``dn_outputs`` (list per layer) and ``dn_meta`` when denoising ran.
        """
        return self.decode(*self.encode(images, masks), targets)

    def encode(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]:
        """Backbone and encoder: ``memory [B, S, C]``, ``mask [B, S]`` (True on padding),
        ``valid_ratios [B, L, 2]`` and the ``L`` level shapes. Static in shape for a given
        input size (no host sync), so it can be captured as one CUDA graph."""
        src, pos, mask, shapes, valid_ratios = self._multiscale_inputs(images, masks)
        return self.encoder(src, pos, shapes, valid_ratios, mask), mask, valid_ratios, shapes

    def decode(self, memory: Tensor, mask: Tensor, valid_ratios: Tensor, shapes: list[tuple[int, int]],
               targets: list[dict[str, Tensor]] | None = None) -> dict:
        """Denoising queries, then ``decode_queries`` on ``encode``'s outputs: ``forward``'s dict."""
        dn_tgt = dn_ref = attn_mask = meta = None
        if self.training and self.denoising is not None and targets is not None:
            dn = self.denoising(targets, self.num_queries, self.denoising_slots)
            if dn is not None:
                dn_tgt, dn_ref, attn_mask, meta = dn
        logits, boxes, interm_logits, interm_boxes = self.decode_queries(memory, mask, valid_ratios, shapes, dn_tgt,
                                                                         dn_ref, attn_mask)
        preds = [{"pred_logits": lg, "pred_boxes": b} for lg, b in zip(logits.unbind(0), boxes.unbind(0))]
        n_slots = meta.slots if meta is not None else 0
        matching = [{k: v[:, n_slots:] for k, v in p.items()} for p in preds]

        out = dict(matching[-1])
        if self.aux_loss:
            out["aux_outputs"] = matching[:-1]
        out["interm_outputs"] = {"pred_logits": interm_logits, "pred_boxes": interm_boxes}
        if meta is not None:  # the groups' queries; unused slots (meta.slots > meta.pad_size) are left out
            out["dn_outputs"] = [{k: v[:, :meta.pad_size] for k, v in p.items()} for p in preds]
            out["dn_meta"] = meta
        return out

    def decode_queries(self, memory: Tensor, mask: Tensor, valid_ratios: Tensor, shapes: list[tuple[int, int]],
                       dn_tgt: Tensor | None = None, dn_ref: Tensor | None = None,
                       attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Query selection and the decoder, the denoising queries (``dn_tgt [B, D, C]``,
        ``dn_ref [B, D, 4]``, ``attn_mask [D + Q, D + Q]``) ahead of the matching ones.

        Returns ``logits [n_layers, B, D + Q, K]`` and ``boxes [n_layers, B, D + Q, 4]``
        (sigmoid cxcywh) of every layer, and the selected proposals' ``interm_logits
        [B, Q, K]`` and ``interm_boxes [B, Q, 4]``. No host sync, and its shapes follow its
        inputs' alone: with a fixed ``D`` (``denoising_slots``) it can be captured as a
        CUDA graph (``dino.models.cuda_graphs.GraphedDecode``)."""
        queries = self.query_selection(memory, mask, shapes, valid_ratios)
        tgt, ref_logits = queries["tgt"], queries["ref_logits"]
        if dn_tgt is not None:
            tgt = torch.cat([dn_tgt.to(tgt.dtype), tgt], 1)
            ref_logits = torch.cat([dn_ref, ref_logits], 1)
        elif self.training and self.denoising is not None:
            # no box in the batch: touch the label embedding so DDP sees every parameter used
            tgt = tgt + 0.0 * self.denoising.label_enc.weight[0, 0]
        hs, boxes = self.decoder(tgt, ref_logits, memory, shapes, valid_ratios, mask, attn_mask)
        logits = self.class_embed(torch.stack(hs))  # [n_layers, B, D+Q, K]: one head call for every layer
        return logits, torch.stack(boxes), queries["interm_logits"], queries["interm_boxes"]
