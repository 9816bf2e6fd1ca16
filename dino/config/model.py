"""The ``model`` section of the TAO DINO train spec, as a typed dataclass.

Field names and defaults follow TAO's ``spec_template_train.yaml`` so a TAO spec loads
unchanged. ``backbone_norm`` is ours: a randomly initialised backbone needs trainable
normalisation (measured: frozen batch norms keep a from-scratch Deformable-DETR near
0 mAP), a pretrained one keeps TAO's frozen batch norms.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ModelConfig:
    pretrained_backbone_path: str = ""
    backbone: str = "resnet_50"  # resnet_50 | resnet_34 | resnet_18 | resnet_tiny (CPU tests)
    num_queries: int = 300
    num_feature_levels: int = 4
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    num_select: int = 300
    interm_loss_coef: float = 1.0
    no_interm_box_loss: bool = False
    pre_norm: bool = False
    two_stage_type: str = "standard"
    decoder_sa_type: str = "sa"
    embed_init_tgt: bool = True
    fix_refpoints_hw: int = -1
    pe_temperatureH: int = 20
    pe_temperatureW: int = 20
    return_interm_indices: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    use_dn: bool = True
    dn_number: int = 100
    dn_box_noise_scale: float = 1.0
    dn_label_noise_ratio: float = 0.5
    focal_alpha: float = 0.25
    clip_max_norm: float = 0.1
    nheads: int = 8
    dropout_ratio: float = 0.0
    hidden_dim: int = 256
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dec_n_points: int = 4
    enc_n_points: int = 4
    aux_loss: bool = True
    dilation: bool = False
    train_backbone: bool = True
    loss_types: list[str] = dataclasses.field(default_factory=lambda: ["labels", "boxes"])
    backbone_names: list[str] = dataclasses.field(default_factory=lambda: ["backbone.0"])
    linear_proj_names: list[str] = dataclasses.field(
        default_factory=lambda: ["reference_points", "sampling_offsets"]
    )
    distillation_loss_coef: float = 1.0
    # ours: "auto" = frozen batch norm with a pretrained backbone, trainable batch norm without
    backbone_norm: str = "auto"  # auto | frozen_bn | bn

    def resolved_backbone_norm(self) -> str:
        if self.backbone_norm != "auto":
            return self.backbone_norm
        return "frozen_bn" if self.pretrained_backbone_path else "bn"
