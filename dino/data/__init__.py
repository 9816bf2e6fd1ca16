"""COCO data for the trainer: dataset, augmentation, loaders, and the shape-set generator."""

from dino.data.coco import CocoDetection, DataError, load_image
from dino.data.loader import build_dataset, check_batch, collate, train_loader, val_loader
from dino.data.synth import DatasetPaths, SplitPaths, generate_dataset

__all__ = [
    "CocoDetection",
    "DataError",
    "DatasetPaths",
    "SplitPaths",
    "build_dataset",
    "check_batch",
    "collate",
    "generate_dataset",
    "load_image",
    "train_loader",
    "val_loader",
]
