"""DINO-4scale detector: model, loss and post-processing.

Public entry points::

    model, criterion, postprocessor = build_dino(cfg, num_classes)
    out = model(images, masks, targets)          # targets only needed in training
    losses = criterion(out, targets)             # losses["loss"] is the weighted total
    results = postprocessor(out, target_sizes)   # top-k boxes in pixels
    load_pretrained_backbone(model, "resnet50.pth")
"""

from dino.models.backbone import load_pretrained_backbone
from dino.models.build import build_dino, validate_model_config
from dino.models.criterion import SetCriterion
from dino.models.dino import DINO
from dino.models.postprocess import PostProcess

__all__ = ["DINO", "PostProcess", "SetCriterion", "build_dino", "load_pretrained_backbone", "validate_model_config"]
