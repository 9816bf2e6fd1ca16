"""COCO data for the trainer: dataset, augmentation, loaders, and the shape-set generator.

The names below load on first use (PEP 562), so ``dino.data.synth`` (numpy and Pillow
only) is imported without torch: ``automl dataset synth`` and the orchestrator's data
preparation need no deep-learning stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetection": "dino.data.coco",
    "DataError": "dino.data.coco",
    "load_image": "dino.data.coco",
    "build_dataset": "dino.data.loader",
    "check_batch": "dino.data.loader",
    "collate": "dino.data.loader",
    "log_data_policy": "dino.data.loader",
    "pad_multiple": "dino.data.loader",
    "train_loader": "dino.data.loader",
    "val_loader": "dino.data.loader",
    "DatasetPaths": "dino.data.synth",
    "SplitPaths": "dino.data.synth",
    "generate_dataset": "dino.data.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dino.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
