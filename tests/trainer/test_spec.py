"""Spec loading: TAO templates, overrides, did-you-mean, ignored fields, value checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dino.config import Spec, SpecError, known_paths, load_spec

from reference_files import tao_file


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tao_train_template_loads_with_defaults_and_reports_ignored_once():
    spec, ignored = load_spec(tao_file("spec_template_train.yaml"))
    assert isinstance(spec, Spec)
    assert spec.model.backbone == "resnet_50" and spec.model.return_interm_indices == [1, 2, 3, 4]
    assert spec.dataset.augmentation.scales[-1] == 800 and spec.dataset.num_classes == 91
    assert spec.train.optim.lr == pytest.approx(2e-4) and spec.train.optim.lr_backbone == pytest.approx(2e-5)
    assert spec.evaluate.checkpoint == ""  # the train template has no evaluate section
    names = [item.split(":")[0] for item in ignored]
    assert len(names) == len(set(names))
    for expected in ("wandb", "quantize", "dataset.dataset_type", "train.activation_checkpoint", "encryption_key"):
        assert expected in names
    assert "train.optim.lr" not in names and "dataset.batch_size" not in names


def test_tao_evaluate_template_loads():
    spec, _ = load_spec(tao_file("spec_template_evaluate.yaml"))
    assert spec.evaluate.checkpoint == "???" and spec.evaluate.batch_size == -1


def test_overrides_take_yaml_values_and_apply_in_order(tmp_path):
    path = write(tmp_path, {"results_dir": "/a", "train": {"num_epochs": 3}})
    spec, _ = load_spec(path, ["train.gpu_ids=[0,1]", "results_dir=/b", "train.optim.lr=1e-3",
                               "train.precision=BF16", "dataset.augmentation.scales=[320, 352]",
                               "train.num_epochs=4", "train.num_epochs=5", "model.use_dn=false",
                               "dataset.test_data_sources={image_dir: /i, json_file: /j.json}"])
    assert spec.train.gpu_ids == [0, 1] and spec.results_dir == "/b"
    assert spec.train.optim.lr == pytest.approx(1e-3)  # "1e-3" is a YAML string: coerced
    assert spec.train.precision == "bf16" and spec.train.num_epochs == 5 and spec.model.use_dn is False
    assert spec.dataset.augmentation.scales == [320, 352]
    assert spec.dataset.test_data_sources[0].json_file == "/j.json"  # TAO's single mapping becomes a list


@pytest.mark.parametrize("override, suggestion", [
    ("train.optim.lr_bakcbone=1e-4", "train.optim.lr_backbone"),
    ("train.lr=0.1", "train.optim.lr"),
    ("dataset.batchsize=2", "dataset.batch_size"),
    ("trian.seed=1", "train.seed"),
])
def test_unknown_override_key_suggests_the_closest(override, suggestion):
    with pytest.raises(SpecError, match=f"did you mean '{suggestion}'"):
        load_spec(None, [override])


def test_unknown_key_in_file_names_file_and_suggests(tmp_path):
    path = write(tmp_path, {"model": {"hiden_dim": 64}})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "'model.hiden_dim'" in str(err.value)
    assert "did you mean 'model.hidden_dim'" in str(err.value)


def test_ignored_sections_accept_anything_and_are_listed(tmp_path):
    # (export and inference were listed here until `dino export` / `dino inference` implemented them)
    path = write(tmp_path, {"wandb": {"enable": True, "whatever": 1}, "distill": {"teacher": "x"},
                            "dataset": {"dataset_type": "default"}})
    spec, ignored = load_spec(path, ["wandb.project=p"])
    assert [i.split(":")[0] for i in ignored] == ["wandb", "distill", "dataset.dataset_type"]


@pytest.mark.parametrize("override, message", [
    ("train.optim.lr=fast", "train.optim.lr must be a number"),
    ("train.num_epochs=2.5", "train.num_epochs must be an integer"),
    ("dataset.pin_memory=maybe", "dataset.pin_memory must be true or false"),
    ("train.gpu_ids=0", "train.gpu_ids must be a list"),
    ("train.precision=fp8", "train.precision must be fp32, bf16 or fp16"),
    ("train.optim.optimizer=Adam", "must be AdamW or SGD"),
    ("train.num_epochs=0", "train.num_epochs must be >= 1"),
    ("train.checkpoint_interval_unit=step", "checkpoint_interval_unit 'step' is not supported"),
    ("model.num_select=400", "model.num_select (400) must be < model.num_queries * dataset.num_classes"),
    ("dataset.augmentation.train_random_crop_min=700", "train_random_crop_min (700) must be <="),
    ("train.num_gpus=2", "train.num_gpus=2"),
    ("results_dir", "not of the form key.sub=value"),
])
def test_bad_values_are_rejected_with_the_field(override, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        load_spec(None, ["dataset.num_classes=1", override] if "num_select" in override else [override])


def test_spec_file_problems(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(bad)


def test_known_paths_cover_every_template_leaf():
    template = yaml.safe_load(tao_file("spec_template_train.yaml").read_text())
    paths = set(known_paths())

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and k not in ("backend_kwargs",) and prefix + k not in ("dataset.test_data_sources",
                                                                                           "dataset.infer_data_sources",
                                                                                           "dataset.quant_calibration_data_sources"):
                yield from leaves(v, prefix + k + ".")
            else:
                yield prefix + k

    missing = [p for p in leaves(template) if p not in paths and p.split(".")[0] not in ("wandb", "quantize")]
    assert missing == []
