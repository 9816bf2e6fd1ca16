"""Shared schemas for the search-space tests (a uniquely named module: conftest.py
files of other test folders would shadow an ``import conftest``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A TAO-format train schema of an image classifier (not DINO): other field names, a power
# of two, a multiple of 32, a '< depends_on', option_weights, Infinity, nested collections.
CLASSIFIER_SCHEMA = {
    "type": "object",
    "x_tao_schema": {"network_arch": "classification_pyt", "action": "train"},
    "automl_default_parameters": [
        "train.optim.lr", "train.optim.min_lr", "train.optim.weight_decay", "train.optim.policy",
        "train.optim.warmup_epochs", "model.backbone.type", "model.head.hidden_channels",
        "dataset.augmentation.crop_size", "dataset.augmentation.mixup_alpha", "train.ema",
        "dataset.batch_size", "dataset.workers", "dataset.data_sources",
    ],
    "automl_disabled_parameters": ["dataset.data_sources", "train.gpu_ids", "evaluate"],
    "properties": {
        "results_dir": {"type": "string", "default": ""},
        "model": {"type": "collection", "properties": {
            "backbone": {"type": "collection", "properties": {
                "type": {"type": "categorical", "enum": ["resnet_18", "resnet_50", "efficientnet_b0"],
                         "default": "resnet_18"},
                "freeze_bn": {"type": "bool", "default": False},
            }},
            "head": {"type": "collection", "properties": {
                "hidden_channels": {"type": "int", "minimum": 8, "maximum": 4096, "math_cond": "^ 2",
                                    "default": 256},
                "num_classes": {"type": "int", "minimum": 1, "maximum": math.inf, "default": 1000},
            }},
        }},
        "dataset": {"type": "collection", "properties": {
            "data_sources": {"type": "list", "default": [{"image_dir": "", "label_file": ""}]},
            "batch_size": {"type": "int", "minimum": 1, "maximum": math.inf, "default": 64},
            "workers": {"type": "int", "minimum": 0, "maximum": math.inf, "default": 8},
            "augmentation": {"type": "collection", "properties": {
                "crop_size": {"type": "int", "minimum": 32, "maximum": 1024, "math_cond": "/ 32", "default": 224},
                "mixup_alpha": {"type": "float", "minimum": 0.0, "maximum": 1.0, "default": 0.2},
            }},
        }},
        "train": {"type": "collection", "properties": {
            "num_epochs": {"type": "int", "minimum": 1, "maximum": math.inf, "default": 100},
            "gpu_ids": {"type": "list", "default": [0]},
            "ema": {"type": "bool", "default": False},
            "optim": {"type": "collection", "properties": {
                "lr": {"type": "float", "minimum": 0.0, "maximum": math.inf, "math_cond": "> 0.0", "default": 0.01},
                "min_lr": {"type": "float", "minimum": 0.0, "maximum": 1.0, "default": 1e-5,
                           "depends_on": "train.optim.lr", "math_cond": "< depends_on"},
                "weight_decay": {"type": "float", "minimum": 0.0, "maximum": 1.0, "default": 5e-5},
                "policy": {"type": "categorical", "enum": ["cosine", "step", "linear"],
                           "option_weights": [0.6, 0.3, 0.1], "default": "cosine"},
                "warmup_epochs": {"type": "int", "minimum": 0, "maximum": math.inf, "default": 5},
            }},
        }},
    },
}  # fmt: skip


def classifier_schema_text() -> str:
    """As TAO writes it: the bare token Infinity."""
    text = json.dumps(CLASSIFIER_SCHEMA, indent=1, allow_nan=True)
    assert "Infinity" in text
    return text
