"""Typed experiment spec (TAO DINO format): parse once with :func:`load_spec`."""

from dino.config.inference_config import InferenceConfig
from dino.config.loader import SpecError, known_paths, load_spec, parse_override, read_yaml
from dino.config.model import ModelConfig
from dino.config.spec import (
    IGNORED_FIELDS,
    IGNORED_SECTIONS,
    AugmentationConfig,
    CudnnConfig,
    DatasetConfig,
    DataSource,
    EvaluateConfig,
    InferDataSource,
    OptimConfig,
    Spec,
    TrainConfig,
)

__all__ = [
    "IGNORED_FIELDS",
    "IGNORED_SECTIONS",
    "AugmentationConfig",
    "CudnnConfig",
    "DataSource",
    "DatasetConfig",
    "EvaluateConfig",
    "InferDataSource",
    "InferenceConfig",
    "ModelConfig",
    "OptimConfig",
    "Spec",
    "SpecError",
    "TrainConfig",
    "known_paths",
    "load_spec",
    "parse_override",
    "read_yaml",
]
