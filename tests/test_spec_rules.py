"""Each cross-field spec rule is stated once (dino.config.rules) and every reader agrees:
the trainer's loader and model builder, preflight, the orchestrator's spec rendering.

The bug this guards against: ``num_feature_levels: 4`` with ``return_interm_indices:
[2, 3, 4]`` passed preflight with a warning, then its rendering raised a ConfigError
outside the study's caught exceptions and aborted the whole run at the first trial.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from automl.datasets import SpecFacts, check_spec
from automl.errors import ConfigError
from automl.search_space import TrainSchema, default_schema_path, default_template_path, render_spec
from dino.config import SpecError, load_spec
from dino.config.rules import RULES, Severity, check_gpu_ids, check_rules

# (overrides, rule code, severity) of each case; None: valid
CASES = {
    "levels_extra_stage": ({"model.num_feature_levels": 4, "model.return_interm_indices": [2, 3, 4]},
                           "interm_levels_extra", Severity.WARNING),
    "levels_equal": ({"model.num_feature_levels": 3, "model.return_interm_indices": [2, 3, 4]}, None, None),
    "levels_too_few": ({"model.num_feature_levels": 3, "model.return_interm_indices": [1, 2, 3, 4]},
                       "interm_levels_mismatch", Severity.ERROR),
    "num_select_at_product": ({"model.num_queries": 10, "dataset.num_classes": 3, "model.num_select": 30},
                              "num_select_too_large", Severity.ERROR),
    "num_select_below_product": ({"model.num_queries": 10, "dataset.num_classes": 3, "model.num_select": 29},
                                 None, None),
    "gpu_ids_too_few": ({"train.num_gpus": 2, "train.gpu_ids": [0]}, "gpu_ids_mismatch", Severity.ERROR),
    "gpu_ids_repeated": ({"train.num_gpus": 2, "train.gpu_ids": [0, 0]}, "gpu_ids_mismatch", Severity.ERROR),
    "gpu_ids_match": ({"train.num_gpus": 2, "train.gpu_ids": [0, 1]}, None, None),
}


@pytest.fixture(scope="module")
def schema():
    return TrainSchema.load(default_schema_path())


@pytest.fixture(scope="module")
def template():
    return yaml.safe_load(default_template_path().read_text())


def _nested(overrides: dict) -> dict:
    out: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_every_reader_judges_a_spec_alike(name, schema, template):
    overrides, code, severity = CASES[name]
    refused = severity is Severity.ERROR
    # the rules themselves
    found = {v.code: v.severity for v in check_rules(lambda path: overrides.get(path))}
    assert found == ({code: severity} if code else {})
    # the trainer's loader (the CLI's `dino train -e spec.yaml key=value`)
    args = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in overrides.items()]
    if refused:
        with pytest.raises(SpecError, match=code.split("_")[0]):
            load_spec(None, args)
    else:
        load_spec(None, args)
    # the orchestrator's rendering of a trial spec
    if refused:
        with pytest.raises(ConfigError):
            render_spec(template, overrides, schema)
    else:
        render_spec(template, overrides, schema)
    # preflight: the same code with the same severity
    facts = SpecFacts.from_spec(_nested(overrides))
    findings = {f.code: f.severity.value for f in check_spec(facts)}
    assert findings == ({code: severity.value} if code else {})


def test_the_models_builder_builds_the_extra_strided_level():
    from dino.models import build_dino

    spec, _ = load_spec(None, ["model.backbone=resnet_tiny", "model.hidden_dim=32", "model.nheads=4",
                               "model.num_feature_levels=4", "model.return_interm_indices=[2,3,4]"])
    model, _, _ = build_dino(spec.model, 3)
    assert len(model.input_proj) == 4
    assert tuple(model.level_embed.shape) == (4, 32)
    with pytest.raises(ValueError, match="num_feature_levels is 2 but must be at least the 3 backbone stages"):
        build_dino(dataclasses.replace(spec.model, num_feature_levels=2), 3)


def test_the_ddp_launcher_reads_the_same_gpu_rule():
    from dino.distributed import plan_devices

    assert check_gpu_ids(2, [0]).is_error
    with pytest.raises(SpecError, match=r"train\.gpu_ids \[0\] must list 2 devices"):
        plan_devices(2, [0])
    assert check_gpu_ids(1, [0, 1]).severity is Severity.WARNING  # one process uses gpu_ids[0]


def test_each_rule_has_a_summary_a_fix_and_distinct_fields():
    assert len({rule.code for rule in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.summary and rule.fix and len(rule.fields) >= 2


def test_the_rules_import_neither_torch_nor_the_orchestrator():
    code = ("import sys, dino.config.rules; bad = [m for m in ('torch', 'optuna', 'automl') if m in sys.modules];"
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
