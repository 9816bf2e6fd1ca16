"""Exponent floats without a dot (``1e-4``) are numbers wherever the project reads YAML:
PyYAML alone reads them as strings, which the train schema then refuses in every trial."""

from pathlib import Path

import yaml

from automl.cli.run import _parse_fixed
from automl.config.loader import read_config_file
from dino.config import parse_override, read_yaml
from dino.config.yaml_values import load_yaml


def test_yaml_1_2_floats_and_everything_else_unchanged():
    text = "a: 1e-4\nb: -3E+2\nc: 2.0e-3\nd: 10\ne: '1e-4'\nf: .5\ng: 1_000\nh: 0x10\ni: .inf\nj: abc\nk: 1e\n"
    assert yaml.safe_load(text)["a"] == "1e-4"  # the PyYAML behaviour this module exists for
    assert load_yaml(text) == {"a": 1e-4, "b": -300.0, "c": 2e-3, "d": 10, "e": "1e-4", "f": 0.5, "g": 1000,
                               "h": 16, "i": float("inf"), "j": "abc", "k": "1e"}
    assert isinstance(load_yaml("x: 10")["x"], int)


def test_spec_file_override_fixed_value_and_config_file(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  optim:\n    lr: 2e-4\n")
    assert read_yaml(str(spec))["train"]["optim"]["lr"] == 2e-4
    assert parse_override("train.optim.lr=1e-5") == (["train", "optim", "lr"], 1e-5)
    assert _parse_fixed(["train.optim.lr=3e-4"]) == {"train.optim.lr": 3e-4}
    config = tmp_path / "run.yaml"
    config.write_text("fixed:\n  train.optim.weight_decay: 5e-5\n")
    assert read_config_file(config)["fixed"]["train.optim.weight_decay"] == 5e-5
