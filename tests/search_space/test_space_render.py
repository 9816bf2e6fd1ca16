"""render_spec: dotted paths (list indices too) onto a template, validated against the schema."""

from __future__ import annotations

import pytest

from automl.errors import ConfigError
from automl.search_space import load_spec_template, render_spec, validate_spec, write_spec
from automl.search_space.dotted import format_path, parse_path, set_path

from reference_files import tao_file


@pytest.fixture(scope="module")
def template():
    from automl.search_space import default_template_path

    return load_spec_template(default_template_path())


def test_sets_paths_with_list_indices_and_keeps_the_template(dino_schema, template):
    spec = render_spec(
        template,
        {
            "train.optim.lr": 1e-4,
            "dataset.train_data_sources[0].image_dir": "/data/train/images",
            "dataset.train_data_sources[0].json_file": "/data/train/annotations.json",
            "dataset.train_data_sources[1].image_dir": "/data/extra/images",  # appends an item
            "dataset.num_classes": 5,
            "results_dir": "/results/trial_3",
            "train.optim.lr_steps": [9],
        },
        dino_schema,
    )
    assert spec["train"]["optim"]["lr"] == 1e-4
    assert spec["dataset"]["train_data_sources"][0] == {
        "image_dir": "/data/train/images", "json_file": "/data/train/annotations.json"}  # fmt: skip
    assert spec["dataset"]["train_data_sources"][1] == {"image_dir": "/data/extra/images"}
    assert spec["model"]["num_queries"] == template["model"]["num_queries"]  # untouched keys stay
    assert template["train"]["optim"]["lr"] == 0.0002  # the template itself is not modified


def test_unknown_key_gets_did_you_mean(dino_schema, template):
    with pytest.raises(ConfigError, match=r"cannot set 'train\.optim\.weight_decy'.*did you mean 'weight_decay'"):
        render_spec(template, {"train.optim.weight_decy": 1e-4}, dino_schema)
    with pytest.raises(ConfigError, match=r"no key 'image_dri' \(did you mean 'image_dir'\?\)"):
        render_spec(template, {"dataset.val_data_sources[0].image_dri": "/x"}, dino_schema)
    with pytest.raises(ConfigError, match="skips items"):
        render_spec(template, {"dataset.val_data_sources[3].image_dir": "/x"}, dino_schema)


def test_every_value_problem_is_listed(dino_schema, template):
    bad = {
        "train.optim.lr": 0.0,  # '> 0.0'
        "model.backbone": "resnet50",
        "dataset.augmentation.horizontal_flip_prob": 1.5,
        "model.num_queries": "many",
    }
    with pytest.raises(ConfigError) as info:
        render_spec(template, bad, dino_schema)
    text = str(info.value)
    assert "train.optim.lr: 0.0 breaks its condition '> 0.0'" in text
    assert "model.backbone: 'resnet50' is not one of" in text and "did you mean 'resnet_50'" in text
    assert "horizontal_flip_prob: 1.5 is above the maximum 1" in text
    assert "model.num_queries: expected an integer, got 'many'" in text


def test_template_keys_are_checked_too(dino_schema, template):
    broken = dict(template, model=dict(template["model"], num_querys=5))
    with pytest.raises(ConfigError, match=r"model\.num_querys: unknown key 'num_querys' under model \(did you mean 'num_queries'\?\)"):
        validate_spec(broken, dino_schema)


def test_dino_cross_field_rules(dino_schema, template):
    with pytest.raises(ConfigError, match=r"model\.num_select \(300\) must be < .* \(100 \* 2 = 200\)"):
        render_spec(template, {"model.num_queries": 100, "dataset.num_classes": 2}, dino_schema)
    # the trainer's one semantics (dino.config.rules): fewer levels than stages cannot be
    # built; more levels are strided extras, built by the bundled trainer (a preflight warning)
    with pytest.raises(ConfigError, match=r"model\.num_feature_levels is 3 but must be at least the 4 backbone stages"):
        render_spec(template, {"model.num_feature_levels": 3, "model.return_interm_indices": [1, 2, 3, 4]}, dino_schema)
    spec = render_spec(template, {"model.num_feature_levels": 4, "model.return_interm_indices": [2, 3, 4]}, dino_schema)
    assert spec["model"]["num_feature_levels"] == 4
    with pytest.raises(ConfigError, match=r"train\.gpu_ids \[0\] must list 2 devices for train\.num_gpus=2"):
        render_spec(template, {"train.num_gpus": 2, "train.gpu_ids": [0]}, dino_schema)
    with pytest.raises(ConfigError, match=r"train_random_crop_max: 300 breaks its condition '>= depends_on' \(dataset\.augmentation\.train_random_crop_min = 384\)"):
        render_spec(template, {"dataset.augmentation.train_random_crop_max": 300}, dino_schema)


def test_tao_template_renders_on_tao_schema(tao_schema):
    tao_template = load_spec_template(tao_file("spec_template_train.yaml"))
    spec = render_spec(tao_template, {"wandb.enable": False, "dataset.workers": 2}, tao_schema)
    assert spec["wandb"]["enable"] is False and spec["dataset"]["workers"] == 2


def test_open_collections_accept_any_key(dino_schema, template):
    spec = render_spec(template, {"wandb.project": "x", "quantize.backend_kwargs.anything": 1}, dino_schema)
    assert spec["wandb"] == {"project": "x"}


def test_write_spec_round_trips(dino_schema, template, tmp_path):
    path = write_spec(render_spec(template, {"train.optim.lr": 3e-4}, dino_schema), tmp_path / "a" / "spec.yaml")
    assert load_spec_template(path)["train"]["optim"]["lr"] == 3e-4


def test_dotted_path_helpers():
    assert parse_path("dataset.train_data_sources[0].image_dir") == ("dataset", "train_data_sources", 0, "image_dir")
    assert format_path(("a", "b", 0, 1, "c")) == "a.b[0][1].c"
    for bad in ("", "a..b", "a.[0]", "a.b]", "1a"):
        with pytest.raises(ValueError):
            parse_path(bad)
    tree: dict = {"a": 1}
    with pytest.raises(ValueError, match="is not a mapping"):
        set_path(tree, ("a", "b"), 2)
