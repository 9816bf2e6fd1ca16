"""The grammar TAO's schema generator emits for other networks, loaded and turned into a space.

The field entries below are copied in shape (type, bounds, enum, math_cond, depends_on,
defaults) from real train schemas of NVIDIA's public tao-skill-bank
(``skills/models/<network>/schemas/train.schema.json``, Apache-2.0); each says which
network and field it comes from. Descriptions and titles are left out. Before this
loader, each of these entries stopped its whole schema ("unknown type", "unknown
math_cond", "minimum must be a number"): 69 of the 169 schema files there. Set
``AUTOML_TAO_SCHEMA_DIR`` to a folder of such files to load every one of them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest

from automl.errors import ConfigError
from automl.search_space import SearchSpace, TrainSchema, load_space_overrides, validate_spec
from automl.search_space.params import ChoiceParam, NumberParam

INF = math.inf

GRAMMAR_SCHEMA = {
    "type": "object",
    "x_tao_schema": {"network_arch": "mixed", "action": "train"},
    "automl_default_parameters": [
        "model.backbone.img_size", "distill.loss_lambda", "train.optm_lr", "train.optm_warmup_epochs",
        "train.epoch", "train.optim.lr_steps", "dataset.augmentation.scales", "policy.lora.target_modules",
    ],
    "automl_disabled_parameters": ["dataset.gaussian_blur.kernel"],
    "properties": {
        "model": {"type": "collection", "popular": ["backbone"], "properties": {  # popular: a list on collections
            "backbone": {"type": "collection", "properties": {
                # tao-train-dinov3 model.backbone.img_size
                "img_size": {"default": 256, "enum": [256, 512, 768], "popular": True, "type": "ordered_int"},
            }},
            "input_height": {"type": "int", "default": 256, "minimum": 32, "maximum": INF},
            "input_width": {"type": "int", "default": 128, "minimum": 32, "maximum": INF},
            # tao-train-mask-auto-label model.frozen_stages
            "frozen_stages": {"automl_enabled": False, "default": [-1], "type": "list_1_backbone"},
        }},
        "distill": {"type": "collection", "properties": {
            # tao-train-image-classification distill.loss_lambda
            "loss_lambda": {"default": 0.5, "math_cond": "> 0.0 <= 1.0", "type": "float"},
        }},
        "train": {"type": "collection", "properties": {
            # tao-finetune-cosmos-reason train.epoch / optm_lr / optm_warmup_epochs / optm_betas
            "epoch": {"type": "int", "default": 10, "minimum": 1, "maximum": 20, "parent_param": "TRUE",
                      "popular": True, "automl_enabled": True},
            "optm_lr": {"anyOf": [{"type": "number"}, {"type": "array"}], "default": 1e-06, "minimum": 0.0,
                        "maximum": INF, "automl_enabled": True},
            "optm_warmup_epochs": {"anyOf": [{"type": "integer"}, {"type": "number"}], "default": 4, "minimum": 0,
                                   "maximum": INF, "math_cond": "/ 2", "depends_on": "train.epoch"},
            "optm_betas": {"type": "list_2", "default": [0.9, 0.999], "minimum": [0.8, 0.9],
                           "maximum": [0.95, 0.999], "automl_enabled": False},
            "optim": {"type": "collection", "properties": {
                # tao-train-action-recognition train.optim.lr_steps
                "lr_steps": {"automl_enabled": False, "default": [15, 25], "type": "list_2"},
            }},
            "num_epochs": {"type": "int", "default": 30, "minimum": 1, "maximum": INF},
        }},
        "dataset": {"type": "collection", "properties": {
            "augmentation": {"type": "collection", "properties": {
                # tao-train-deformable-detr dataset.augmentation.scales
                "scales": {"automl_enabled": False, "default": [480, 512, 544, 576, 608], "type": "list_2"},
            }},
            "gaussian_blur": {"type": "collection", "properties": {
                # tao-train-metric-learning-recognition dataset.gaussian_blur.kernel
                "kernel": {"automl_enabled": False, "default": [15, 15], "depends_on": "model.input_height,model.input_width",
                           "type": "list_3"},
            }},
        }},
        "policy": {"type": "collection", "properties": {"lora": {"type": "collection", "properties": {
            # tao-finetune-cosmos-reason policy.lora.target_modules / modules_to_save
            "target_modules": {"type": "subset_list", "default": ["q_proj", "v_proj"],
                               "depends_on": "policy.lora.modules_to_save",
                               "enum": ["q_proj", "k_proj", "v_proj", "o_proj", "all-linear"], "automl_enabled": False},
            "modules_to_save": {"type": "optional_list", "default": [], "parent_param": "TRUE", "enum": ["visual"],
                                "automl_enabled": False},
        }}}},
        "vision": {"type": "collection", "properties": {
            # tao-finetune-cosmos-reason (evaluate) vision.fps
            "fps": {"automl_enabled": False, "exclusiveMinimum": 0, "type": "float", "default": 2.0},
        }},
        "quantize": {"type": "collection", "required": ["device"], "properties": {
            # tao-train-deformable-detr quantize.device
            "device": {"default": "cuda", "pattern": "^(cuda|cpu|trt|cuda:[0-9]+)$", "type": "string"},
            # TAO's CSV spellings: valid_options "1,3" and a string bound
            "input_channel": {"type": "ordered_int", "default": 3, "valid_options": "1,3", "valid_min": "1",
                              "valid_max": "inf"},
        }},
    },
}  # fmt: skip


@pytest.fixture
def schema() -> TrainSchema:
    return TrainSchema.from_dict(GRAMMAR_SCHEMA, "grammar.json")


def test_every_entry_is_interpreted(schema):
    assert schema.skipped == {} and schema.warnings == []
    img = schema.fields["model.backbone.img_size"]
    assert (img.type, img.enum, img.tao_type) == ("int", (256, 512, 768), "ordered_int")
    assert schema.fields["quantize.input_channel"].enum == (1, 3)
    assert schema.fields["quantize.input_channel"].maximum == INF
    assert schema.fields["distill.loss_lambda"].math_cond.describe() == "> 0 and <= 1"
    lr = schema.fields["train.optm_lr"]
    assert (lr.type, lr.alternatives) == ("float", ("list",))
    assert schema.fields["train.optm_warmup_epochs"].type == "int"
    betas = schema.fields["train.optm_betas"]
    assert (betas.type, betas.tao_type, betas.item_minimum, betas.item_maximum) == ("list", "list_2", (0.8, 0.9),
                                                                                    (0.95, 0.999))
    kernel = schema.fields["dataset.gaussian_blur.kernel"]
    assert kernel.parents == ("model.input_height", "model.input_width") and kernel.depends_on is None
    assert schema.fields["policy.lora.target_modules"].enum[0] == "q_proj"
    fps = schema.fields["vision.fps"]
    assert (fps.minimum, fps.exclusive_minimum) == (0, True)
    validate_spec(schema.default_spec(), schema)


@pytest.mark.parametrize("path, value, problem", [
    ("model.backbone.img_size", 300, "300 is not one of [256, 512, 768]"),
    ("distill.loss_lambda", 0.0, "breaks its condition '> 0.0 <= 1.0'"),
    ("distill.loss_lambda", 1.5, "breaks its condition '> 0.0 <= 1.0'"),
    ("train.optm_lr", -1.0, "below the minimum 0"),
    ("train.optm_betas", [0.7, 0.95], "element 0 (0.7) is below the minimum 0.8"),
    ("train.optm_betas", "0.9", "expected a list"),
    ("policy.lora.target_modules", ["q_proj", "qq_proj"], "'qq_proj' is not one of"),
    ("vision.fps", 0.0, "0.0 is not above the minimum 0"),
    ("quantize.device", "gpu", "does not match the pattern"),
    ("train.optm_warmup_epochs", 3, "breaks its condition '/ 2'"),
])  # fmt: skip
def test_values_are_checked_by_each_form(schema, path, value, problem):
    spec = schema.default_spec()
    node = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    problems = schema.spec_problems(spec)
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("path, value", [
    ("train.optm_lr", [1e-6, 1e-5]),  # the array alternative of anyOf
    ("distill.loss_lambda", 1.0),  # '<= 1.0' includes 1
    ("policy.lora.modules_to_save", ["visual"]),
    ("quantize.device", "cuda:1"),
])  # fmt: skip
def test_values_each_form_accepts(schema, path, value):
    spec = schema.default_spec()
    node = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    assert schema.spec_problems(spec) == []


def test_the_space_samples_what_can_be_sampled_and_says_why_not_the_rest(schema):
    space = SearchSpace.build(schema)
    img = space["model.backbone.img_size"]
    assert isinstance(img, ChoiceParam) and img.choices == (256, 512, 768) and img.ordered
    lam = space["distill.loss_lambda"]
    assert isinstance(lam, NumberParam) and lam.low > 0.0 and lam.high == 1.0 and lam.open_low
    warmup = space["train.optm_warmup_epochs"]  # [default/2, default*2] in multiples of 2
    assert isinstance(warmup, NumberParam) and (warmup.low, warmup.high, warmup.step) == (2, 8, 2)
    for path in ("train.optim.lr_steps", "dataset.augmentation.scales"):
        assert "TAO's list_2" in space.excluded[path] and "rule: epoch_fraction" in space.excluded[path]
    assert "TAO's subset_list" in space.excluded["policy.lora.target_modules"]
    assert space.warnings == []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.0)
        assert values["model.backbone.img_size"] in (256, 512, 768)
        assert 0.0 < values["distill.loss_lambda"] <= 1.0
        assert values["train.optm_warmup_epochs"] % 2 == 0


def test_tao_lists_are_tuned_through_a_space_file(schema, tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        "base: none\nparameters:\n"
        "  train.optim.lr_steps: {rule: epoch_fraction, epochs: train.num_epochs}\n"
        "  policy.lora.target_modules: {values: [[q_proj, v_proj], [all-linear]]}\n"
    )
    space = SearchSpace.build(schema, load_space_overrides(space_file))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.add(tuple(values["policy.lora.target_modules"]))
        assert values["train.optim.lr_steps"] == [28]  # 11/12 of train.num_epochs (30), as DINO's schedule
    assert seen == {("q_proj", "v_proj"), ("all-linear",)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: none\nparameters:\n  policy.lora.target_modules: {values: [[q_proj, nope]]}\n")
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        SearchSpace.build(schema, load_space_overrides(bad))


def _schema_files() -> list[Path]:
    folder = os.environ.get("AUTOML_TAO_SCHEMA_DIR")
    return sorted(Path(folder).glob("*.json")) if folder else []


@pytest.mark.skipif(not _schema_files(), reason="set AUTOML_TAO_SCHEMA_DIR to a folder of TAO schema files")
@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_a_real_tao_schema_loads_and_its_space_samples(path):
    schema = TrainSchema.load(path)
    space = SearchSpace.build(schema)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.0)
