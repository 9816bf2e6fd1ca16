"""The TAO DINO spec as typed dataclasses (all sections but ``model``, ``export`` and ``inference``).

Field names, nesting and defaults follow TAO's ``spec_template_train.yaml``,
``spec_template_evaluate.yaml`` and ``spec_template_inference.yaml`` so a TAO spec loads
unchanged. Fields marked "ours" are not in TAO. Which fields the trainer accepts but does
not act on is listed in :data:`IGNORED_FIELDS` / :data:`IGNORED_SECTIONS`; the loader
reports those once.
"""

from __future__ import annotations

import dataclasses

from dino.config.export_config import ExportConfig
from dino.config.inference_config import InferenceConfig
from dino.config.model import ModelConfig


@dataclasses.dataclass
class DataSource:
    """One COCO source: ``json_file`` annotations, image ``file_name``s relative to ``image_dir``."""

    image_dir: str = ""
    json_file: str = ""


@dataclasses.dataclass
class InferDataSource:
    """``dino inference``'s images: every image file directly inside each ``image_dir``
    (TAO); ``classmap`` a text file, line i the name of category id i + 1 (TAO).
    ``json_file`` (ours): a COCO file naming the images instead (relative to the one
    ``image_dir``); its image ids and category names are then used."""

    image_dir: list[str] = dataclasses.field(default_factory=lambda: [""])
    classmap: str = ""
    json_file: str = ""


@dataclasses.dataclass
class AugmentationConfig:
    """DETR/TAO augmentation. Training picks, per image and with equal odds, either a
    resize of the shorter side to one of ``scales`` or resize(``train_random_resize``) ->
    random crop (``train_random_crop_min``..``train_random_crop_max``) -> resize(``scales``);
    longer side capped at ``random_resize_max_size``. Validation resizes the shorter side
    to ``test_random_resize`` (same cap)."""

    scales: list[int] = dataclasses.field(
        default_factory=lambda: [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
    )
    input_mean: list[float] = dataclasses.field(default_factory=lambda: [0.485, 0.456, 0.406])
    input_std: list[float] = dataclasses.field(default_factory=lambda: [0.229, 0.224, 0.225])
    train_random_resize: list[int] = dataclasses.field(default_factory=lambda: [400, 500, 600])
    horizontal_flip_prob: float = 0.5
    train_random_crop_min: int = 384
    train_random_crop_max: int = 600
    random_resize_max_size: int = 1333
    test_random_resize: int = 800
    fixed_padding: bool = True  # acted on with train.compile only (else: pad to the batch's largest image)
    fixed_random_crop: int = 1024  # ignored


@dataclasses.dataclass
class DatasetConfig:
    train_sampler: str = "default_sampler"
    train_data_sources: list[DataSource] = dataclasses.field(default_factory=lambda: [DataSource()])
    val_data_sources: list[DataSource] = dataclasses.field(default_factory=lambda: [DataSource()])
    # TAO writes a single mapping here; a list is accepted too. Used by ``dino evaluate``.
    test_data_sources: list[DataSource] = dataclasses.field(default_factory=lambda: [DataSource()])
    infer_data_sources: InferDataSource = dataclasses.field(default_factory=InferDataSource)
    quant_calibration_data_sources: DataSource = dataclasses.field(default_factory=DataSource)
    batch_size: int = 4
    workers: int = 8  # DataLoader worker processes; 0 loads in the training process
    pin_memory: bool = True
    dataset_type: str = "serialized"
    num_classes: int = 91  # category ids are class indices: must exceed the largest id
    eval_class_ids: list[int] = dataclasses.field(default_factory=lambda: [1])
    # ours: refuse the dataset on any data-policy finding instead of fixing it (dino/data/policy.py)
    strict_data_policy: bool = False
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)


@dataclasses.dataclass
class CudnnConfig:
    benchmark: bool = False
    deterministic: bool = True


@dataclasses.dataclass
class OptimConfig:
    optimizer: str = "AdamW"  # AdamW | SGD
    monitor_name: str = "val_loss"
    lr: float = 2e-4
    lr_backbone: float = 2e-5  # meant for a pretrained backbone; see scratch_backbone_lr_mult
    lr_linear_proj_mult: float = 0.1  # sampling_offsets / reference_points get lr * this
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    lr_scheduler: str = "MultiStep"  # MultiStep (lr_steps) | StepLR (lr_step_size); per epoch
    lr_steps: list[int] = dataclasses.field(default_factory=lambda: [11])
    lr_step_size: int = 11
    lr_decay: float = 0.1
    layer_decay_rate: float = 0.65  # ViT backbones only: ignored
    # ours: a backbone that starts from random weights has nothing to preserve, so its
    # learning rate is raised to at least lr * scratch_backbone_lr_mult (0 disables).
    scratch_backbone_lr_mult: float = 0.5


# the validation metrics ``train.best_checkpoint_metric`` may name, and which way is better
BEST_METRICS: dict[str, str] = {"val_mAP50": "max", "val_mAP": "max", "val_loss": "min"}


@dataclasses.dataclass
class TrainConfig:
    num_gpus: int = 1
    gpu_ids: list[int] = dataclasses.field(default_factory=lambda: [0])
    num_nodes: int = 1
    seed: int = 1234
    cudnn: CudnnConfig = dataclasses.field(default_factory=CudnnConfig)
    num_epochs: int = 10
    checkpoint_interval: int = 1
    checkpoint_interval_unit: str = "epoch"  # only "epoch" is supported
    # ours: model_best.pth follows the best epoch of this validation metric ("" = none)
    best_checkpoint_metric: str = "val_mAP50"
    validation_interval: int = 1
    resume_training_checkpoint_path: str = ""
    results_dir: str = ""  # default: <results_dir>/train
    freeze: list[str] = dataclasses.field(default_factory=list)  # parameter-name prefixes
    pretrained_model_path: str = ""  # weights only (shape-mismatched tensors are skipped)
    clip_grad_norm: float = 0.1  # <= 0 disables clipping
    is_dry_run: bool = False
    conf_threshold: float = 0.0
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    precision: str = "fp32"  # fp32 | bf16 | fp16
    distributed_strategy: str = "ddp"
    activation_checkpoint: bool = True
    compile: bool = False  # ours: torch.compile the encoder/decoder layers on CUDA (see dino/config/README.md)
    cuda_graphs: bool = True  # ours: on one GPU, backbone + encoder replayed from CUDA graphs (dino/config/README.md)
    # ours: with cuda_graphs, the query selection and decoder too, the denoising queries in
    # fixed slots (dino/config/README.md)
    cuda_graphs_decoder: bool = True


@dataclasses.dataclass
class EvaluateConfig:
    num_gpus: int = 1
    gpu_ids: list[int] = dataclasses.field(default_factory=lambda: [0])
    num_nodes: int = 1
    checkpoint: str = ""  # "" or "???": the latest checkpoint of <results_dir>/train
    trt_engine: str = ""
    results_dir: str = ""  # default: <results_dir>/evaluate
    batch_size: int = -1  # -1: dataset.batch_size
    conf_threshold: float = 0.0  # detections scoring below are dropped before COCO eval


@dataclasses.dataclass
class Spec:
    """One parsed experiment spec. Everything inside the trainer receives this object."""

    results_dir: str = ""
    model_name: str = ""
    encryption_key: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)


# Whole top-level sections of TAO specs this trainer accepts without reading.
IGNORED_SECTIONS: tuple[str, ...] = (
    "wandb",
    "quantize",
    "distill",
    "gen_trt_engine",
)

# Fields parsed for compatibility but not acted on, with the reason shown to the user.
IGNORED_FIELDS: dict[str, str] = {
    "model_name": "not used for file names",
    "encryption_key": "checkpoints are not encrypted",
    "dataset.train_sampler": "the default (uniform shuffling) sampler is always used",
    "dataset.dataset_type": "images are read from disk",
    "dataset.quant_calibration_data_sources": "no quantization",
    "dataset.eval_class_ids": "COCO mAP is over all categories",
    "dataset.augmentation.fixed_random_crop": "not implemented",
    "model.clip_max_norm": "train.clip_grad_norm is used",
    "model.distillation_loss_coef": "no distillation",
    "train.num_nodes": "single node",
    "train.is_dry_run": "not implemented",
    "train.conf_threshold": "validation keeps every detection",
    "train.optim.monitor_name": "no plateau scheduler",
    "train.optim.layer_decay_rate": "ViT backbones only",
    "train.distributed_strategy": "single process",
    "train.activation_checkpoint": "not implemented",
    "evaluate.num_nodes": "single node",
    "evaluate.trt_engine": "no TensorRT",
    "export.gpu_id": "the graph is traced on the CPU",
    "export.on_cpu": "the exported graph runs on any device",
    "export.serialize_nvdsinfer": "no DeepStream config is written",
    "inference.num_nodes": "single node",
    "inference.trt_engine": "no TensorRT",
    "inference.is_internal": "drawn images keep the input's file names",
    "inference.input_width": "images are resized as in validation (dataset.augmentation.test_random_resize)",
    "inference.input_height": "images are resized as in validation (dataset.augmentation.test_random_resize)",
}
