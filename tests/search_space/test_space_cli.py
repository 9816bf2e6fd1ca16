"""``automl space show`` / ``automl space sample`` through automl.cli.main."""

from __future__ import annotations

import copy
import json

import pytest

from automl.cli import main

from space_schemas import CLASSIFIER_SCHEMA, classifier_schema_text


def _run(capsys, *argv):
    code = main(["space", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_default_space(capsys):
    code, out, err = _run(capsys, "show")
    assert code == 0, err
    assert "default_space.yaml" in out and "train.schema.json" in out
    for text in ("Parameter", "Range", "Scale", "Condition", "Source", "train.optim.lr",
                 "rate/decay over", "model.num_select", "derived", "[round(0.917 x"):  # fmt: skip
        assert text in out, text


def test_show_schema_derived_space_lists_what_is_not_tuned(capsys, tao_schema_path):
    code, out, _ = _run(capsys, "show", "--schema", str(tao_schema_path), "--context", "dataset.num_classes=5")
    assert code == 0
    assert "(derived from the schema)" in out and "context: dataset.num_classes=5" in out
    assert "Not tuned" in out and "dataset.workers" in out and "resource setting" in out


def test_sample_json_is_seeded(capsys):
    code, out, _ = _run(capsys, "sample", "-n", "4", "--seed", "7", "--json", "--context", "dataset.num_classes=5")
    assert code == 0
    sets = json.loads(out)
    assert len(sets) == 4 and all("train.optim.lr" in s for s in sets)
    assert all(5e-5 <= s["train.optim.lr"] <= 1e-3 for s in sets)
    assert all(s["model.num_select"] <= min(s["model.num_queries"], s["model.num_queries"] * 5 - 1) for s in sets)
    _, again, _ = _run(capsys, "sample", "-n", "4", "--seed", "7", "--json", "--context", "dataset.num_classes=5")
    _, other, _ = _run(capsys, "sample", "-n", "4", "--seed", "8", "--json", "--context", "dataset.num_classes=5")
    assert json.loads(again) == sets and json.loads(other) != sets


def test_sample_table_and_other_network(capsys, write):
    schema = write("classifier.schema.json", classifier_schema_text())
    code, out, _ = _run(capsys, "sample", "--schema", str(schema), "-n", "2")
    assert code == 0 and "#0" in out and "#1" in out and "model.head.hidden_channels" in out
    code, out, _ = _run(capsys, "sample", "--schema", str(schema), "-n", "3", "--json")
    assert code == 0 and {s["train.optim.policy"] for s in json.loads(out)} <= {"cosine", "step", "linear"}


def _bad_schema(write, path, **changes):
    data = copy.deepcopy(CLASSIFIER_SCHEMA)
    node = data
    for part in path.split("."):
        node = node["properties"][part]
    node.update(changes)
    return str(write("bad.schema.json", json.dumps(data)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda w: str(w("x.json", "{not json")), "is not valid JSON"),
        (lambda w: _bad_schema(w, "train.optim.lr", depends_on="train.optim.min_lr"), "depends_on cycle"),
    ],
)  # fmt: skip
def test_bad_schema_exits_2_naming_the_problem(capsys, write, make, message):
    code, out, err = _run(capsys, "show", "--schema", make(write))
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("changes, reason", [
    (dict(minimum=1.0, maximum=0.5), "minimum 1 is greater than maximum 0.5"),
    (dict(math_cond="=> 0"), "unknown math_cond '=> 0'"),
])  # fmt: skip
def test_a_field_the_schema_garbles_is_left_out_with_one_warning_and_tuning_it_exits_2(capsys, write, changes, reason):
    schema = _bad_schema(write, "train.optim.lr", **changes)
    code, out, err = _run(capsys, "show", "--schema", schema)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "'train.optim.lr' cannot be interpreted" in warnings[0] and reason in warnings[0]
    assert "train.optim.min_lr" in out  # the rest of the space is there
    assert "cannot be interpreted" in out  # the Not tuned table says why lr is not
    space = write("s.yaml", "base: none\nparameters:\n  train.optim.lr: {min: 0.001, max: 0.1}\n")
    code, _, err = _run(capsys, "show", "--schema", schema, "--space", str(space))
    assert code == 2 and "train.optim.lr cannot be tuned" in err and reason in err and "Traceback" not in err


def test_bad_space_file_exits_2(capsys, write):
    space = write("s.yaml", "base: dino/default_space.yaml\nparameters:\n  model.num_querys: {max: 900}\n")
    code, _, err = _run(capsys, "show", "--space", str(space))
    assert code == 2 and "s.yaml line 3" in err and "did you mean 'num_queries'" in err
    space = write("t.yaml", "base: none\nparameters:\n  train.optim.lr: {min: 0.1, max: 0.01}\n")
    code, _, err = _run(capsys, "sample", "--space", str(space), "--json")
    assert code == 2 and "min 0.1 is greater than max 0.01" in err


def test_bad_context_and_count(capsys):
    code, _, err = _run(capsys, "sample", "--context", "dataset.num_clases=5")
    assert code == 2 and "did you mean 'num_classes'" in err
    code, _, err = _run(capsys, "sample", "--context", "dataset.num_classes=0")
    assert code == 2 and "below the minimum 1" in err
    code, _, err = _run(capsys, "sample", "-n", "0")
    assert code == 2 and "-n must be at least 1" in err


def test_search_spaces_dir_can_be_moved(capsys, monkeypatch, tmp_path):
    from automl.search_space import search_spaces_dir

    (tmp_path / "dino").mkdir()
    for name in ("train.schema.json", "default_space.yaml", "spec_template_train.yaml"):
        (tmp_path / "dino" / name).write_text((search_spaces_dir() / "dino" / name).read_text())
    monkeypatch.setenv("AUTOML_SEARCH_SPACES", str(tmp_path))
    code, out, _ = _run(capsys, "show")
    assert code == 0 and str(tmp_path) in out
    monkeypatch.setenv("AUTOML_SEARCH_SPACES", str(tmp_path / "missing"))
    code, _, err = _run(capsys, "show")
    assert code == 2 and "AUTOML_SEARCH_SPACES" in err
