"""Emit this trainer's train schema, in TAO's format, from its spec dataclasses.

Types, nesting and defaults come from :class:`dino.config.Spec`, so the schema cannot
drift from what ``dino train`` accepts; limits, options, conditions and descriptions come
from :data:`FIELD_RULES` below. Fields the trainer accepts but does not act on say so in
their description and are never offered for tuning. Regenerate with::

    python -m dino.config.json_schema search_spaces/dino/train.schema.json

(a test fails when the committed file differs from this output).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from typing import Any

from dino.config.spec import IGNORED_FIELDS, IGNORED_SECTIONS, Spec

INF = math.inf

# Per dotted path: TAO schema keys (minimum, maximum, enum, math_cond, depends_on,
# parent_param, popular) and our own description.
FIELD_RULES: dict[str, dict[str, Any]] = {
    "results_dir": {"description": "Folder for all outputs; training writes to <results_dir>/train."},
    "model_name": {"description": "Name of the experiment."},
    "encryption_key": {"description": "Key for encrypted checkpoints."},
    # ------------------------------------------------------------------ model
    "model": {"description": "The DINO detector: backbone, transformer, queries, denoising and losses."},
    "model.pretrained_backbone_path": {"description": "A torchvision ResNet state dict to start the backbone from; empty: random weights."},
    "model.backbone": {"enum": ["resnet_50", "resnet_34", "resnet_18", "resnet_tiny"],
                       "description": "Backbone network; resnet_tiny is a small ResNet for CPU tests."},
    "model.num_queries": {"minimum": 1, "maximum": INF, "parent_param": "TRUE",
                          "description": "Object queries the decoder refines (two-stage: the top encoder proposals)."},
    "model.num_feature_levels": {"minimum": 1, "maximum": 5,
                                 "description": "Feature scales fed to the deformable transformer; at least len(return_interm_indices)."},
    "model.cls_loss_coef": {"minimum": 0.0, "maximum": INF, "description": "Weight of the focal classification loss."},
    "model.bbox_loss_coef": {"minimum": 0.0, "maximum": INF, "description": "Weight of the L1 box loss."},
    "model.giou_loss_coef": {"minimum": 0.0, "maximum": INF, "description": "Weight of the generalized-IoU box loss."},
    "model.num_select": {"minimum": 1, "maximum": INF, "depends_on": "model.num_queries",
                         "description": "Detections kept per image after post-processing (top-k over queries x classes); must be below num_queries x num_classes."},
    "model.interm_loss_coef": {"minimum": 0.0, "maximum": INF, "description": "Weight of the losses on the encoder's proposals."},
    "model.no_interm_box_loss": {"description": "Drop the box losses on the encoder's proposals."},
    "model.pre_norm": {"description": "Layer norm before (not after) attention and feed-forward blocks."},
    "model.two_stage_type": {"enum": ["standard"], "description": "Query selection from encoder proposals; only 'standard' is implemented."},
    "model.decoder_sa_type": {"enum": ["sa"], "description": "Decoder self-attention type; only 'sa' is implemented."},
    "model.embed_init_tgt": {"description": "Learn the decoder's content queries instead of taking them from the encoder."},
    "model.fix_refpoints_hw": {"minimum": -2, "maximum": INF, "math_cond": "!= 0",
                               "description": "Fixed reference box size: -1 learned per query, -2 learned shared, > 0 that value."},
    "model.pe_temperatureH": {"minimum": 1, "maximum": INF, "description": "Temperature of the sine position encoding along the height."},
    "model.pe_temperatureW": {"minimum": 1, "maximum": INF, "description": "Temperature of the sine position encoding along the width."},
    "model.return_interm_indices": {"description": "Backbone stages (1-4) whose features enter the transformer."},
    "model.use_dn": {"description": "Train with contrastive denoising queries."},
    "model.dn_number": {"minimum": 0, "maximum": INF, "description": "Denoising queries per image, split into positive/negative groups; 0 disables denoising."},
    "model.dn_box_noise_scale": {"minimum": 0.0, "maximum": INF, "description": "Scale of the noise added to ground-truth boxes for denoising."},
    "model.dn_label_noise_ratio": {"minimum": 0.0, "maximum": 1.0, "description": "Fraction of denoising labels flipped to a random class."},
    "model.focal_alpha": {"minimum": 0.0, "maximum": 1.0, "math_cond": "> 0.0", "description": "Alpha of the focal loss."},
    "model.clip_max_norm": {"description": "TAO's model-level gradient clip."},
    "model.nheads": {"minimum": 1, "maximum": INF, "description": "Attention heads; hidden_dim must be a multiple of it."},
    "model.dropout_ratio": {"minimum": 0.0, "maximum": 1.0, "math_cond": "< 1.0", "description": "Dropout in the transformer."},
    "model.hidden_dim": {"minimum": 4, "maximum": INF, "math_cond": "/ 4", "description": "Transformer width; a multiple of 4 and of nheads."},
    "model.enc_layers": {"minimum": 1, "maximum": INF, "description": "Deformable encoder layers."},
    "model.dec_layers": {"minimum": 1, "maximum": INF, "description": "Deformable decoder layers."},
    "model.dim_feedforward": {"minimum": 1, "maximum": INF, "description": "Width of the transformer's feed-forward blocks."},
    "model.dec_n_points": {"minimum": 1, "maximum": INF, "description": "Sampling points per head and level in decoder cross-attention."},
    "model.enc_n_points": {"minimum": 1, "maximum": INF, "description": "Sampling points per head and level in encoder attention."},
    "model.aux_loss": {"description": "Losses on every decoder layer, not only the last."},
    "model.dilation": {"description": "Dilate the last ResNet stage (resnet_50 only)."},
    "model.train_backbone": {"description": "Update the backbone's weights."},
    "model.loss_types": {"description": "Losses to compute: labels (required) and boxes."},
    "model.backbone_names": {"description": "Parameter-name prefixes that get the backbone learning rate."},
    "model.linear_proj_names": {"description": "Parameter-name parts that get lr x lr_linear_proj_mult."},
    "model.distillation_loss_coef": {"minimum": 0.0, "description": "Weight of the distillation loss."},
    "model.backbone_norm": {"enum": ["auto", "frozen_bn", "bn"],
                            "description": "Backbone normalization: auto = frozen batch norm with a pretrained backbone, trainable without one."},
    # ---------------------------------------------------------------- dataset
    "dataset": {"description": "COCO data sources, loading and augmentation."},
    "dataset.train_sampler": {"enum": ["default_sampler", "non_uniform_sampler", "uniform_sampler"], "description": "Training sampler."},
    "dataset.train_data_sources": {"description": "Training sources: each an image_dir and a COCO json_file."},
    "dataset.val_data_sources": {"description": "Validation sources: each an image_dir and a COCO json_file."},
    "dataset.test_data_sources": {"description": "Sources for dino evaluate."},
    "dataset.infer_data_sources": {"description": "Images for dino inference."},
    "dataset.infer_data_sources.image_dir": {"description": "Image folders for dino inference (the image files directly inside each)."},
    "dataset.infer_data_sources.classmap": {"description": "Text file of class names: line i names category id i + 1."},
    "dataset.infer_data_sources.json_file": {"description": "Ours: a COCO file listing the images (relative to the one image_dir); its image ids and category names are used."},
    "dataset.quant_calibration_data_sources": {"description": "Calibration data for quantization."},
    "dataset.quant_calibration_data_sources.image_dir": {"description": "Calibration images."},
    "dataset.quant_calibration_data_sources.json_file": {"description": "Calibration annotations."},
    "dataset.batch_size": {"minimum": 1, "maximum": INF, "description": "Images per step per GPU; bounded by GPU memory."},
    "dataset.workers": {"minimum": 0, "maximum": INF, "description": "Data-loader processes; 0 loads in the training process."},
    "dataset.pin_memory": {"description": "Pin host memory for faster copies to the GPU."},
    "dataset.dataset_type": {"enum": ["serialized", "default"], "description": "How TAO stores the dataset in memory."},
    "dataset.num_classes": {"minimum": 1, "maximum": INF, "math_cond": "> 0",
                            "description": "Class logits; category ids are class indices, so it must exceed the largest id."},
    "dataset.eval_class_ids": {"description": "Classes to report in evaluation."},
    "dataset.strict_data_policy": {"description": "Ours: refuse the dataset on any data-policy finding (zero-area or clipped boxes, EXIF rotation, rescaled sizes) instead of fixing it."},
    "dataset.augmentation": {"description": "Training augmentation and resizing."},
    "dataset.augmentation.scales": {"description": "Shorter-side sizes a training image is resized to (one drawn per image)."},
    "dataset.augmentation.input_mean": {"description": "Per-channel mean for normalization (RGB)."},
    "dataset.augmentation.input_std": {"description": "Per-channel standard deviation for normalization (RGB)."},
    "dataset.augmentation.train_random_resize": {"description": "Shorter-side sizes before the random crop."},
    "dataset.augmentation.horizontal_flip_prob": {"minimum": 0.0, "maximum": 1.0, "description": "Probability of a horizontal flip."},
    "dataset.augmentation.train_random_crop_min": {"minimum": 32, "maximum": 1024, "parent_param": "TRUE",
                                                    "description": "Smallest side of the random crop."},
    "dataset.augmentation.train_random_crop_max": {"minimum": 32, "maximum": 1333, "depends_on": "dataset.augmentation.train_random_crop_min",
                                                    "math_cond": ">= depends_on", "description": "Largest side of the random crop."},
    "dataset.augmentation.random_resize_max_size": {"minimum": 1, "maximum": INF, "description": "Cap on the longer side after resizing."},
    "dataset.augmentation.test_random_resize": {"minimum": 32, "maximum": INF, "description": "Shorter side of validation images."},
    "dataset.augmentation.fixed_padding": {"description": "Pad every batch to a fixed size."},
    "dataset.augmentation.fixed_random_crop": {"minimum": 1, "maximum": INF, "description": "Fixed crop size."},
    # ------------------------------------------------------------------ train
    "train": {"description": "Training loop: devices, epochs, checkpoints, precision and optimizer."},
    "train.num_gpus": {"minimum": 1, "maximum": INF, "popular": True, "description": "GPUs per trial."},
    "train.gpu_ids": {"popular": True, "description": "Device indices, one per GPU."},
    "train.num_nodes": {"minimum": 1, "maximum": INF, "popular": True, "description": "Machines per trial."},
    "train.seed": {"minimum": -1, "maximum": INF, "description": "Random seed."},
    "train.cudnn": {"description": "cuDNN switches."},
    "train.cudnn.benchmark": {"description": "Let cuDNN pick the fastest kernels (non-deterministic)."},
    "train.cudnn.deterministic": {"description": "Deterministic cuDNN kernels."},
    "train.num_epochs": {"minimum": 1, "maximum": INF, "popular": True, "description": "Training epochs."},
    "train.checkpoint_interval": {"minimum": 1, "maximum": INF, "popular": True, "description": "Save a checkpoint every N epochs."},
    "train.checkpoint_interval_unit": {"enum": ["epoch"], "description": "Unit of checkpoint_interval; only epoch is supported."},
    "train.best_checkpoint_metric": {"enum": ["val_mAP50", "val_mAP", "val_loss", ""],
                                     "description": "Ours: model_best.pth holds the best epoch of this validation metric; empty: none."},
    "train.validation_interval": {"minimum": 1, "maximum": INF, "popular": True, "description": "Validate every N epochs."},
    "train.resume_training_checkpoint_path": {"description": "Checkpoint to resume from; empty: the latest one in the results dir."},
    "train.results_dir": {"description": "Training outputs; empty: <results_dir>/train."},
    "train.freeze": {"description": "Parameter-name prefixes kept frozen."},
    "train.cuda_graphs": {"description": "Ours: on one GPU, replay the backbone and encoder from CUDA graphs in training (one per input shape, at most 9)."},
    "train.cuda_graphs_decoder": {"description": "Ours: with train.cuda_graphs, replay the query selection and decoder from CUDA graphs in training too, the denoising queries in 2 x max(model.dn_number, most boxes in an image) slots."},
    "train.compile": {"description": "Ours: torch.compile the backbone body and transformer layers on CUDA (with fixed_padding for static shapes)."},
    "export": {"description": "dino export: ONNX file from a trained checkpoint."},
    "export.results_dir": {"description": "Export outputs; empty: <results_dir>/export."},
    "export.gpu_id": {"description": "Ignored: the graph is traced on the CPU."},
    "export.checkpoint": {"description": "Checkpoint to export; empty or ???: the latest one of the train dir."},
    "export.onnx_file": {"description": "Output file; empty or ???: <export dir>/<checkpoint name>.onnx."},
    "export.on_cpu": {"description": "Ignored: the exported graph has no device-specific op."},
    "export.input_channel": {"enum": [3], "description": "Input channels (RGB)."},
    "export.input_width": {"minimum": 32, "maximum": INF, "description": "Fixed input width of the graph."},
    "export.input_height": {"minimum": 32, "maximum": INF, "description": "Fixed input height of the graph."},
    "export.opset_version": {"minimum": 16, "maximum": 20, "description": "ONNX opset (grid_sample needs >= 16)."},
    "export.batch_size": {"minimum": -1, "maximum": INF, "description": "-1: dynamic batch axis; N >= 1: fixed batch."},
    "export.verbose": {"description": "Print the traced graph."},
    "export.format": {"enum": ["onnx"], "description": "Only onnx."},
    "export.serialize_nvdsinfer": {"description": "Ignored: no DeepStream config is written."},
    "export.verify": {"description": "Ours: compare ONNX Runtime with PyTorch on a random batch before writing."},
    "train.pretrained_model_path": {"description": "Whole-model weights to start from (mismatched tensors are skipped)."},
    "train.clip_grad_norm": {"description": "Gradient-norm clip; <= 0 disables clipping."},
    "train.is_dry_run": {"description": "Set up without training."},
    "train.conf_threshold": {"minimum": 0.0, "maximum": 1.0, "description": "Score threshold for detections in validation."},
    "train.optim": {"description": "Optimizer and learning-rate schedule."},
    "train.optim.optimizer": {"enum": ["AdamW", "SGD"], "description": "Optimizer."},
    "train.optim.monitor_name": {"enum": ["val_loss", "train_loss"], "description": "Metric a plateau scheduler would watch."},
    "train.optim.lr": {"minimum": 0.0, "maximum": 1.0, "math_cond": "> 0.0", "description": "Learning rate of the transformer and heads."},
    "train.optim.lr_backbone": {"minimum": 0.0, "maximum": 1.0,
                                "description": "Backbone learning rate; a random-init backbone is raised to lr x scratch_backbone_lr_mult."},
    "train.optim.lr_linear_proj_mult": {"minimum": 0.0, "maximum": 1.0,
                                        "description": "Multiplier of lr for the deformable attention's sampling offsets and reference points."},
    "train.optim.momentum": {"minimum": 0.0, "maximum": 1.0, "description": "SGD momentum (SGD only)."},
    "train.optim.weight_decay": {"minimum": 0.0, "maximum": 1.0, "description": "Decoupled weight decay (AdamW) or L2 penalty (SGD)."},
    "train.optim.lr_scheduler": {"enum": ["MultiStep", "StepLR"], "description": "MultiStep decays at lr_steps; StepLR every lr_step_size epochs."},
    "train.optim.lr_steps": {"description": "Epochs after which MultiStep multiplies the rate by lr_decay."},
    "train.optim.lr_step_size": {"minimum": 1, "maximum": 10000, "math_cond": "> 0", "description": "StepLR period in epochs."},
    "train.optim.lr_decay": {"minimum": 0.0, "maximum": 1.0, "math_cond": "> 0.0", "description": "Factor applied to the rate at each step."},
    "train.optim.layer_decay_rate": {"minimum": 0.0, "maximum": 1.0, "math_cond": "> 0.0", "description": "Layer-wise rate decay for ViT backbones."},
    "train.optim.scratch_backbone_lr_mult": {"minimum": 0.0, "maximum": INF,
                                             "description": "Ours: a random-init backbone's rate is at least lr x this; 0 keeps lr_backbone as given."},
    "train.precision": {"enum": ["fp32", "bf16", "fp16"], "description": "Training precision (bf16/fp16: autocast)."},
    "train.distributed_strategy": {"enum": ["ddp", "fsdp"], "description": "Multi-GPU strategy."},
    "train.activation_checkpoint": {"description": "Recompute activations to save memory."},
    # --------------------------------------------------------------- evaluate
    "evaluate": {"description": "Settings of dino evaluate."},
    "evaluate.num_gpus": {"minimum": 1, "maximum": INF, "description": "GPUs for evaluation."},
    "evaluate.gpu_ids": {"description": "Device indices for evaluation."},
    "evaluate.num_nodes": {"minimum": 1, "maximum": INF, "description": "Machines for evaluation."},
    "evaluate.checkpoint": {"description": "Checkpoint to evaluate; empty: the latest of <results_dir>/train."},
    "evaluate.trt_engine": {"description": "TensorRT engine to evaluate."},
    "evaluate.results_dir": {"description": "Evaluation outputs; empty: <results_dir>/evaluate."},
    "evaluate.batch_size": {"minimum": -1, "maximum": INF, "math_cond": "!= 0", "description": "Evaluation batch size; -1: dataset.batch_size."},
    "evaluate.conf_threshold": {"minimum": 0.0, "maximum": 1.0, "description": "Detections scoring below are dropped before COCO evaluation."},
    # -------------------------------------------------------------- inference
    "inference": {"description": "Settings of dino inference: predictions JSON and drawn images."},
    "inference.num_gpus": {"minimum": 1, "maximum": INF, "description": "GPUs for inference; one process runs on gpu_ids[0]."},
    "inference.gpu_ids": {"description": "Device indices for inference (the first is used)."},
    "inference.num_nodes": {"minimum": 1, "maximum": INF, "description": "Machines for inference."},
    "inference.checkpoint": {"description": "Checkpoint to run; empty or ???: the latest of <results_dir>/train."},
    "inference.trt_engine": {"description": "TensorRT engine to run."},
    "inference.results_dir": {"description": "Inference outputs; empty: <results_dir>/inference."},
    "inference.batch_size": {"minimum": -1, "maximum": INF, "math_cond": "!= 0", "description": "Images per batch; -1: dataset.batch_size."},
    "inference.conf_threshold": {"minimum": 0.0, "maximum": 1.0, "description": "Detections scoring below are neither written nor drawn."},
    "inference.is_internal": {"description": "TAO's internal folder layout for drawn images."},
    "inference.input_width": {"minimum": 32, "maximum": INF, "description": "TAO's input width."},
    "inference.input_height": {"minimum": 32, "maximum": INF, "description": "TAO's input height."},
    "inference.outline_width": {"minimum": 1, "maximum": INF, "description": "Box outline width in pixels of the drawn images."},
    "inference.color_map": {"description": "Class name -> colour of its boxes (a PIL colour name or #rrggbb)."},
}  # fmt: skip

# What AutoML may tune (a space file picks from these or adds others). Resource settings
# are listed as TAO does but the search space leaves them out by rule.
AUTOML_DEFAULT_PARAMETERS = [
    "train.optim.lr",
    "train.optim.lr_backbone",
    "train.optim.lr_linear_proj_mult",
    "train.optim.weight_decay",
    "train.optim.lr_decay",
    "model.num_queries",
    "model.num_select",
    "model.enc_layers",
    "model.dec_layers",
    "model.dn_number",
    "model.dn_box_noise_scale",
    "model.dn_label_noise_ratio",
    "dataset.augmentation.horizontal_flip_prob",
    "dataset.augmentation.train_random_crop_min",
    "dataset.augmentation.train_random_crop_max",
    "dataset.batch_size",
]
# Never tuned unless a space file adds them: lists, paths, devices and the fields this
# trainer ignores (tuning those would only add noise).
_DISABLED = [
    "model.return_interm_indices", "model.loss_types", "model.backbone_names", "model.linear_proj_names",
    "model.hidden_dim", "dataset.train_data_sources", "dataset.val_data_sources", "dataset.test_data_sources",
    "dataset.eval_class_ids", "dataset.augmentation.scales", "dataset.augmentation.input_mean",
    "dataset.augmentation.input_std", "dataset.augmentation.train_random_resize",
    "dataset.augmentation.test_random_resize", "train.gpu_ids", "train.freeze", "train.cudnn",
    "train.optim.lr_steps", "train.optim.momentum", "train.optim.lr_step_size", "evaluate", "export",
    "inference", "train.compile", "dataset.strict_data_policy",
]  # fmt: skip
AUTOML_DISABLED_PARAMETERS = _DISABLED + list(IGNORED_SECTIONS) + list(IGNORED_FIELDS)


def build_train_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict (``math.inf`` where TAO writes ``Infinity``)."""
    properties: dict[str, Any] = {}
    for name in IGNORED_SECTIONS:
        properties[name] = {
            "type": "collection",
            "automl_enabled": False,
            "description": "TAO section this trainer accepts and ignores.",
        }
    properties.update(_properties(Spec, ""))
    missing = [p for p in FIELD_RULES if not _exists(p)]
    if missing:
        raise KeyError(f"FIELD_RULES names fields the spec does not have: {missing}")
    return {
        "type": "object",
        "x_tao_schema": {
            "network_arch": "dino",
            "action": "train",
            "schema_version": 1,
            "source": "dino.config dataclasses via dino/config/json_schema.py",
        },
        "automl_default_parameters": list(AUTOML_DEFAULT_PARAMETERS),
        "automl_disabled_parameters": list(AUTOML_DISABLED_PARAMETERS),
        "properties": properties,
    }


def _properties(cls: type, prefix: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    defaults = dataclasses.asdict(cls())
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        path = prefix + field.name
        out[field.name] = _node(path, hints[field.name], defaults[field.name])
    return out


def _node(path: str, tp: Any, default: Any) -> dict[str, Any]:
    rules = dict(FIELD_RULES.get(path, {}))
    description = rules.pop("description", "")
    node: dict[str, Any] = {}
    if dataclasses.is_dataclass(tp):
        node["type"] = "collection"
        node["properties"] = _properties(tp, path + ".")
    elif typing.get_origin(tp) is list:
        node["type"] = "list"
        node["default"] = default
    elif typing.get_origin(tp) is dict:
        node["type"] = "collection"
        node["default"] = default
    else:
        node["type"] = {bool: "bool", int: "int", float: "float", str: "string"}[tp]
        if "enum" in rules:
            node["type"] = "categorical"
        node["default"] = default
    node.update(rules)
    if path in IGNORED_FIELDS:
        description = f"{description} Accepted but not used by this trainer: {IGNORED_FIELDS[path]}.".strip()
    if path in AUTOML_DISABLED_PARAMETERS:
        node["automl_enabled"] = False
    elif path in AUTOML_DEFAULT_PARAMETERS:
        node["automl_enabled"] = True
    node["description"] = description
    return {k: node[k] for k in sorted(node)}


def _exists(path: str) -> bool:
    cls: Any = Spec
    for part in path.split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return False
        cls = hints[part]
    return True


def render_train_schema() -> str:
    """The schema as TAO writes it: sorted keys, two-space indent, bare ``Infinity``."""
    return json.dumps(build_train_schema(), indent=2, allow_nan=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render_train_schema()
    if argv:
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
