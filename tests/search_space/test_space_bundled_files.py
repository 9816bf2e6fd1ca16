"""The bundled DINO files agree with the trainer: schema generated from its dataclasses,
template accepted by its loader."""

from __future__ import annotations

from automl.search_space import (
    SearchSpace,
    default_schema_path,
    default_template_path,
    load_spec_template,
    validate_spec,
)


def test_committed_schema_is_the_generated_one():
    from dino.config.json_schema import render_train_schema

    committed = default_schema_path().read_text(encoding="utf-8")
    assert committed == render_train_schema(), (
        "search_spaces/dino/train.schema.json is stale: run "
        "python -m dino.config.json_schema search_spaces/dino/train.schema.json"
    )
    assert "Infinity" in committed


def test_every_trainer_field_is_in_the_schema(dino_schema):
    from dino.config import known_paths

    for path in known_paths():
        assert dino_schema.resolve(path) is not None or path.split(".")[0] in ("wandb", "quantize", "distill",
                                                                                 "export", "inference", "gen_trt_engine")  # fmt: skip


def test_template_is_what_the_trainer_loads_and_fits_the_schema(dino_schema):
    from dino.config import load_spec

    spec, ignored = load_spec(default_template_path())
    assert ignored == []  # the template sets nothing the trainer would ignore
    validate_spec(load_spec_template(default_template_path()), dino_schema)


def test_schema_alone_gives_a_sensible_space(dino_schema):
    space = SearchSpace.build(dino_schema, context={"dataset.num_classes": 5})
    assert "dataset.batch_size" in space.excluded  # listed by the schema, left out by rule
    assert space["train.optim.lr"].log
    ignored = [p for p in space.paths if dino_schema.fields[p].automl_enabled is False]
    assert ignored == []
