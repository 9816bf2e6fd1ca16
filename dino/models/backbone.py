"""ResNet backbone returning the multi-scale feature maps DINO attends to.

``return_interm_indices`` picks stages by number: 1..4 are ``layer1``..``layer4`` of a
ResNet (strides 4, 8, 16, 32; torchvision's classes and names, ``dino.models.resnet``). The backbone is wrapped with the position
encoding in ``Joiner`` (an ``nn.Sequential``), so its parameters are named
``backbone.0.body.<torchvision name>`` inside the detector: TAO's ``backbone_names``
(``["backbone.0"]``) selects them for the backbone learning rate by substring.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dino.models.position_encoding import PositionEmbeddingSine
from dino.models.resnet import ARCHITECTURES, FrozenBatchNorm2d, StageOutputs, build_resnet

# channels of layer1..layer4 per backbone name
STAGE_CHANNELS = {name: tuple(w * block.expansion for w in widths) for name, (block, _, widths) in ARCHITECTURES.items()}


class Backbone(nn.Module):
    """ResNet body that returns the selected stages with their downsampled masks.

    Args:
        name: ``resnet_50`` | ``resnet_34`` | ``resnet_18`` | ``resnet_tiny``.
        return_interm_indices: stage numbers in 1..4, ascending.
        norm: ``frozen_bn`` (pretrained weights) or ``bn`` (trainable, for from-scratch).
        train_backbone: False freezes every weight (and keeps batch norms in eval mode).
        freeze_stem: freeze the stem and ``layer1`` as DETR does for ImageNet weights.
        dilation: dilate ``layer4`` (stride 16 instead of 32).
    """

    def __init__(
        self,
        name: str,
        return_interm_indices: list[int],
        norm: str = "bn",
        train_backbone: bool = True,
        freeze_stem: bool = False,
        dilation: bool = False,
    ):
        super().__init__()
        norms = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}
        if norm not in norms:
            raise ValueError(f"model.backbone_norm={norm!r} is not supported; choose frozen_bn, bn or auto")
        bad = [i for i in return_interm_indices if i not in (1, 2, 3, 4)]
        if bad or not return_interm_indices or list(return_interm_indices) != sorted(set(return_interm_indices)):
            raise ValueError(
                f"model.return_interm_indices={list(return_interm_indices)} must be ascending distinct stage "
                "numbers in 1..4 (1 = layer1, stride 4; 4 = layer4, stride 32)"
            )
        resnet = build_resnet(name, norms[norm], dilation)
        self.name = name
        self.train_backbone = train_backbone
        for pname, param in resnet.named_parameters():
            stem_or_layer1 = not any(pname.startswith(f"layer{i}") for i in (2, 3, 4))
            if not train_backbone or (freeze_stem and stem_or_layer1):
                param.requires_grad_(False)
        self.body = StageOutputs(resnet, {f"layer{i}": str(k) for k, i in enumerate(return_interm_indices)})
        self.num_channels = [STAGE_CHANNELS[name][i - 1] for i in return_interm_indices]
        self.strides = [min(2 ** (i + 1), 16) if dilation else 2 ** (i + 1) for i in return_interm_indices]

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if not self.train_backbone:
            self.body.eval()  # a frozen backbone keeps its batch-norm statistics too
        return self

    def forward(self, images: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Args:
            images: ``[B, 3, H, W]``; mask: ``[B, H, W]`` True on padding.
        Returns:
            one ``(features [B, C_l, H_l, W_l], mask [B, H_l, W_l])`` per selected stage.
        """
        outs = []
        for feat in self.body(images).values():
            m = F.interpolate(mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
            outs.append((feat, m))
        return outs


class Joiner(nn.Sequential):
    """``[0]`` the backbone, ``[1]`` the position encoding; returns both per level."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels
        self.strides = backbone.strides

    def forward(self, images: Tensor, mask: Tensor) -> tuple[list[tuple[Tensor, Tensor]], list[Tensor]]:
        """Returns ``(levels, pos)``: levels as ``Backbone.forward``, pos ``[B, C, H_l, W_l]`` each."""
        levels = self[0](images, mask)
        return levels, [self[1](m) for _, m in levels]


def load_pretrained_backbone(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet state dict (a local ``.pth``) into ``model``'s backbone.

    Accepts a bare state dict or one wrapped under ``state_dict`` / ``model``, with or
    without a ``module.`` prefix. The classifier (``fc.*``) and stages the detector does
    not use are skipped; any backbone weight left unloaded or of a different shape is an
    error naming the keys, because a half-loaded backbone trains silently badly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_backbone_path: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, ...
        raise ValueError(
            f"model.pretrained_backbone_path {str(path)!r} is not a readable torch state dict: {exc}"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = model.backbone[0]  # type: ignore[index]
    body = backbone.body
    own = {k: v for k, v in body.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in own if k not in state)
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise ValueError(
            f"{str(path)!r} does not fit this model's backbone {backbone.name} "
            f"(is model.backbone the same ResNet depth as the file?). "
            f"Missing {len(missing)} keys, e.g. {missing[:5]}; shape mismatches: {wrong[:5]}"
        )
    body.load_state_dict({k: state[k] for k in own}, strict=False)
