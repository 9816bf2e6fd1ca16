"""Builds model, criterion and post-processor from the spec's ``model`` section.

Everything a user can get wrong in ``model.*`` is checked here, before any weight is
allocated, with the field named. TAO fields that the bundled trainer accepts but does
not use: ``pre_norm`` (always post-norm, as DINO's released configs),
``fix_refpoints_hw``, ``distillation_loss_coef``; ``clip_max_norm`` is the trainer's.
"""

from __future__ import annotations

from dataclasses import fields

from dino.config.model import ModelConfig
from dino.config.rules import check_rules, rules_for
from dino.models.backbone import STAGE_CHANNELS, Backbone, Joiner
from dino.models.criterion import SetCriterion
from dino.models.deformable_transformer import DeformableDecoder, DeformableEncoder
from dino.models.dino import DINO
from dino.models.dn_components import ContrastiveDenoising
from dino.models.matcher import HungarianMatcher
from dino.models.position_encoding import PositionEmbeddingSine
from dino.models.postprocess import PostProcess
from dino.models.query_selection import QuerySelection

# Matching costs of DINO's released configs (the spec has no fields for them).
MATCH_COST_CLASS, MATCH_COST_BBOX, MATCH_COST_GIOU = 2.0, 5.0, 2.0


def validate_model_config(cfg: ModelConfig, num_classes: int) -> None:
    """Raise ``ValueError`` naming every ``model.*`` field that cannot work (the cross-field
    ones by the shared rules of :mod:`dino.config.rules`)."""
    problems = []
    if num_classes < 1:
        problems.append(f"dataset.num_classes={num_classes} must be >= 1")
    if cfg.backbone not in STAGE_CHANNELS:
        problems.append(f"model.backbone={cfg.backbone!r} is not one of {sorted(STAGE_CHANNELS)}")
    if cfg.hidden_dim % 4 != 0 or cfg.hidden_dim % cfg.nheads != 0:
        problems.append(f"model.hidden_dim={cfg.hidden_dim} must be a multiple of 4 and of model.nheads={cfg.nheads}")
    positive = ("num_queries", "enc_layers", "dec_layers", "dim_feedforward", "enc_n_points", "dec_n_points", "nheads")
    for name in positive:
        if getattr(cfg, name) < 1:
            problems.append(f"model.{name}={getattr(cfg, name)} must be >= 1")
    values = {"dataset.num_classes": num_classes, **{f"model.{f.name}": getattr(cfg, f.name) for f in fields(cfg)}}
    problems += [str(v) for v in check_rules(values.get, rules_for(values)) if v.is_error]
    if not 0.0 <= cfg.dropout_ratio < 1.0:
        problems.append(f"model.dropout_ratio={cfg.dropout_ratio} must be in [0, 1)")
    if cfg.dn_number < 0 or not 0.0 <= cfg.dn_label_noise_ratio <= 1.0 or cfg.dn_box_noise_scale < 0:
        problems.append(
            "model.dn_number must be >= 0, model.dn_label_noise_ratio in [0, 1] and model.dn_box_noise_scale >= 0 "
            f"(got {cfg.dn_number}, {cfg.dn_label_noise_ratio}, {cfg.dn_box_noise_scale})"
        )
    if cfg.two_stage_type != "standard":
        problems.append(f"model.two_stage_type={cfg.two_stage_type!r}: only 'standard' is implemented")
    if cfg.decoder_sa_type != "sa":
        problems.append(f"model.decoder_sa_type={cfg.decoder_sa_type!r}: only 'sa' is implemented")
    unknown_losses = set(cfg.loss_types) - {"labels", "boxes"}
    if unknown_losses or "labels" not in cfg.loss_types:
        problems.append(f"model.loss_types={cfg.loss_types}: supported are ['labels', 'boxes'] (labels required)")
    if cfg.resolved_backbone_norm() not in ("frozen_bn", "bn"):
        problems.append(f"model.backbone_norm={cfg.backbone_norm!r} must be auto, frozen_bn or bn")
    if problems:
        raise ValueError("invalid model config: " + "; ".join(problems))


def build_dino(cfg: ModelConfig, num_classes: int) -> tuple[DINO, SetCriterion, PostProcess]:
    """Build ``(model, criterion, postprocessor)`` for ``num_classes`` class logits.

    Labels are used as class indices directly (TAO: ``num_classes >= max(category_id) + 1``).
    The backbone is randomly initialised; ``load_pretrained_backbone`` loads weights.
    """
    validate_model_config(cfg, num_classes)
    pretrained = bool(cfg.pretrained_backbone_path)
    body = Backbone(
        cfg.backbone,
        list(cfg.return_interm_indices),
        norm=cfg.resolved_backbone_norm(),
        train_backbone=cfg.train_backbone,
        freeze_stem=pretrained and cfg.train_backbone,
        dilation=cfg.dilation,
    )
    backbone = Joiner(body, PositionEmbeddingSine(cfg.hidden_dim // 2, cfg.pe_temperatureH, cfg.pe_temperatureW))
    levels, d = cfg.num_feature_levels, cfg.hidden_dim
    encoder = DeformableEncoder(cfg.enc_layers, d, cfg.dim_feedforward, cfg.dropout_ratio, levels, cfg.nheads,
                                cfg.enc_n_points)
    decoder = DeformableDecoder(cfg.dec_layers, d, cfg.dim_feedforward, cfg.dropout_ratio, levels, cfg.nheads,
                                cfg.dec_n_points)
    selection = QuerySelection(d, cfg.num_queries, num_classes, cfg.embed_init_tgt)
    denoising = None
    if cfg.use_dn and cfg.dn_number > 0:
        denoising = ContrastiveDenoising(num_classes, d, cfg.dn_number, cfg.dn_label_noise_ratio,
                                         cfg.dn_box_noise_scale)
    model = DINO(backbone, encoder, decoder, selection, denoising, num_classes, levels, aux_loss=cfg.aux_loss)

    matcher = HungarianMatcher(MATCH_COST_CLASS, MATCH_COST_BBOX, MATCH_COST_GIOU, focal_alpha=cfg.focal_alpha)
    criterion = SetCriterion(
        num_classes,
        matcher,
        cls_loss_coef=cfg.cls_loss_coef,
        bbox_loss_coef=cfg.bbox_loss_coef if "boxes" in cfg.loss_types else 0.0,
        giou_loss_coef=cfg.giou_loss_coef if "boxes" in cfg.loss_types else 0.0,
        focal_alpha=cfg.focal_alpha,
        aux_loss=cfg.aux_loss,
        interm_loss_coef=cfg.interm_loss_coef,
        no_interm_box_loss=cfg.no_interm_box_loss,
    )
    return model, criterion, PostProcess(cfg.num_select)
