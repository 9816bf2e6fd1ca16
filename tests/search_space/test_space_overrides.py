"""Space files: restrict, rescale, fix, add, remove; bases; and errors that name the line."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from automl.errors import ConfigError
from automl.search_space import SearchSpace, load_space_overrides
from automl.search_space.params import ChoiceParam, EpochStepsParam, FixedParam, NumberParam


def _space(schema, write, text, name="space.yaml", **kw):
    return SearchSpace.build(schema, load_space_overrides(write(name, textwrap.dedent(text))), **kw)


def test_curated_dino_space(dino_schema, curated_space_path):
    space = SearchSpace.build(dino_schema, load_space_overrides(curated_space_path))
    assert set(space.paths) >= {
        "train.optim.lr", "train.optim.lr_backbone", "train.optim.weight_decay", "model.num_queries",
        "dataset.augmentation.horizontal_flip_prob", "train.optim.lr_steps", "model.num_select",
    }  # fmt: skip
    assert "dataset.workers" not in space.paths and "dataset.batch_size" not in space.paths
    lr = space["train.optim.lr"]
    assert lr.log and (lr.low, lr.high) == (5e-5, 1e-3) and "default_space.yaml line" in lr.source
    assert space["model.num_select"].kind == "derived"  # the DINO rule follows num_queries
    assert isinstance(space["train.optim.lr_steps"], EpochStepsParam)


def test_override_example_does_every_operation(dino_schema):
    from automl.search_space import search_spaces_dir

    space = SearchSpace.build(dino_schema, load_space_overrides(search_spaces_dir() / "dino/override_example.yaml"))
    lr = space["train.optim.lr"]  # restricted: max changed, min and log kept from the base
    assert (lr.low, lr.high, lr.log) == (5e-5, 5e-4, True)
    assert "override_example.yaml line" in lr.source and "over default_space.yaml" in lr.source
    wd = space["train.optim.weight_decay"]  # rescaled
    assert not wd.log and wd.scale_rule == "space file"
    assert space["model.hidden_dim"].choices == (128, 256)  # added although the schema disables it
    assert "the schema disables it" in space["model.hidden_dim"].source
    assert isinstance(space["model.dn_number"], FixedParam) and space["model.dn_number"].value == 100
    assert "dataset.augmentation.horizontal_flip_prob" not in space.paths
    assert "removed by override_example.yaml" in space.excluded["dataset.augmentation.horizontal_flip_prob"]
    assert space["model.backbone"].weights == (1.0, 1.0, 2.0)


def test_base_schema_with_changes(tao_schema, write):
    space = _space(
        tao_schema,
        write,
        """
        base: schema
        parameters:
          train.optim.lr: {min: 1.0e-5, max: 1e-3}    # YAML 1.1 reads 1e-3 as text: accepted
          dataset.batch_size: {values: [2, 4, 8]}
          train.optim.lr_decay: {scale: linear}
          model.hidden_dim: {}                      # the schema disables it; {} uses the rules
        fixed:
          train.optim.momentum: 0.9
        remove: [model.enc_layers, model.dec_layers]
        """,
    )
    assert (space["train.optim.lr"].low, space["train.optim.lr"].high) == (1e-5, 1e-3)
    assert space["dataset.batch_size"].choices == (2, 4, 8)
    assert not space["train.optim.lr_decay"].log
    assert "model.enc_layers" not in space.paths and "model.dec_layers" not in space.paths
    assert space["train.optim.momentum"].value == 0.9
    assert "dataset.workers" in space.excluded  # still excluded: not added
    assert isinstance(space["model.hidden_dim"], NumberParam)


def test_base_none_lists_only_the_file(tao_schema, write):
    space = _space(tao_schema, write, "base: none\nparameters:\n  train.optim.lr: {}\n")
    assert space.paths == ["train.optim.lr"]


def test_context_values_are_never_sampled(tao_schema, write):
    space = _space(tao_schema, write, "base: schema\nparameters:\n  dataset.num_classes: {min: 2, max: 9}\n",
                   context={"dataset.num_classes": 5})  # fmt: skip
    assert "dataset.num_classes" not in space.paths
    assert "context" in space.excluded["dataset.num_classes"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("base: schema\nparameters:\n  model.num_querys: {max: 900}\n",
         r"space\.yaml line 3: 'model\.num_querys': model has no key 'num_querys' \(did you mean 'num_queries'\?\)"),
        ("base: schema\nparameters:\n  train.optim.lr: {min: 1.0e-3, max: 1.0e-5}\n",
         r"space\.yaml line 3: train\.optim\.lr: min 0\.001 is greater than max 1e-05"),
        ("base: schema\nparameters:\n  train.optim.lr: {mni: 1.0e-3}\n",
         r"unknown key 'mni' \(did you mean 'min'\?\)"),
        ("base: schema\nparameters:\n  train.optim.lr: {min: 0.0}\n",
         r"train\.optim\.lr: min 0 is outside what the schema allows, \(0, 1\]"),
        ("base: schema\nparameters:\n  train.optim.lr: {scale: log2}\n", "scale must be 'log' or 'linear'"),
        ("base: schema\nparameters:\n  model.backbone: {values: [resnet_50, resnet50]}\n",
         r"value 'resnet50' is not one of .*did you mean 'resnet_50'"),
        ("base: schema\nparameters:\n  train.optim.lr: {math_cond: '~ 2'}\n", r"unknown math_cond '~ 2'"),
        ("base: schema\nparameters:\n  model.num_queries: {depends_on: model.num_select, math_cond: '> depends_on'}\n",
         r"depends_on cycle model\.(num_queries|num_select) -> model\.(num_queries|num_select)"),
        ("base: schema\nparameters:\n  model.loss_types: {}\n", r"model\.loss_types is a list: to tune it give 'values"),
        ("base: schema\nfixed:\n  train.optim.lr: -1\n", r"train\.optim\.lr: fixed value -1 is below the minimum 0"),
        ("base: schema\nremove: [dataset.wrkers]\n", r"did you mean 'workers'"),
        ("parameters: {}\n", r"say what this space builds on with 'base:'"),
        ("base: schema\nparametres: {}\n", r"unknown key 'parametres' \(did you mean 'parameters'\?\)"),
        ("base: schema\nparameters:\n  train.optim.lr: {}\nfixed:\n  train.optim.lr: 0.1\n", "also under 'parameters'"),
        ("base: schema\nparameters: [a, b]\n", "'parameters' must be a mapping"),
        ("base: schema\nparameters:\n  model.backbone: {values: [resnet_50, resnet_34], weights: [1]}\n",
         "1 weights for 2 values"),
        ("base: schema\nparameters: {a: 1\n", "not valid YAML at line"),
        ("base: nowhere.yaml\n", "base 'nowhere.yaml' not found"),
    ],
)  # fmt: skip
def test_bad_space_files_name_the_field(tao_schema, write, text, message):
    with pytest.raises(ConfigError, match=message):
        _space(tao_schema, write, text)


def test_base_cycle(tao_schema, write):
    write("a.yaml", "base: b.yaml\n")
    path = write("b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="base cycle: b.yaml -> a.yaml -> b.yaml"):
        load_space_overrides(path)


def test_relative_condition_infeasible_range(classifier_schema, write):
    # min_lr must stay below lr: an lr range reaching below min_lr's floor is an error
    with pytest.raises(ConfigError, match=r"train\.optim\.min_lr: when train\.optim\.lr = 1e-08"):
        _space(classifier_schema, write, """
            base: schema
            parameters:
              train.optim.lr: {min: 1.0e-8, max: 1.0e-2}
              train.optim.min_lr: {min: 1.0e-6, max: 1.0e-4}
            """)  # fmt: skip


def test_weights_by_name_and_epoch_fraction(dino_schema, write):
    space = _space(
        dino_schema,
        write,
        """
        base: none
        parameters:
          model.backbone: {values: [resnet_18, resnet_34], weights: {resnet_34: 3, resnet_18: 1}}
          train.optim.lr_steps: {rule: epoch_fraction, fractions: [0.5, 0.75]}
          train.num_epochs: {values: [4, 8, 12]}
        """,
    )
    assert space["model.backbone"].weights == (1.0, 3.0)
    assert space.paths.index("train.num_epochs") < space.paths.index("train.optim.lr_steps")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = space.suggest(study.ask())
        epochs = values["train.num_epochs"]
        assert values["train.optim.lr_steps"] == sorted({round(0.5 * epochs), round(0.75 * epochs)})


def test_epoch_fraction_steps_stay_inside_training():
    assert EpochStepsParam.steps((11 / 12,), 10) == [9]
    assert EpochStepsParam.steps((11 / 12,), 12) == [11]
    assert EpochStepsParam.steps((0.99,), 3) == [2]
    assert EpochStepsParam.steps((0.01,), 5) == [1]
    assert EpochStepsParam.steps((0.5,), 1) == [1]


def test_choice_under_a_cap_rule_is_refused(dino_schema, write):
    with pytest.raises(ConfigError, match=r"model\.num_select: must stay <= min\(model\.num_queries"):
        _space(dino_schema, write, "base: none\nparameters:\n  model.num_select: {values: [100, 300]}\n")
    assert isinstance(
        _space(dino_schema, write, "base: none\nparameters:\n  model.num_select: {min: 50, max: 300}\n")["model.num_select"],
        NumberParam,
    )
    assert isinstance(_space(dino_schema, write, "base: none\nparameters:\n  model.backbone: {}\n")["model.backbone"], ChoiceParam)


def test_fixed_value_under_a_cap_rule_is_checked_at_build(dino_schema, write):
    text = "base: dino/default_space.yaml\nfixed:\n  model.num_select: 300\n"
    with pytest.raises(ConfigError, match=r"space\.yaml line 3: model\.num_select is fixed at 300, but when model\.num_queries = 100"):
        _space(dino_schema, write, text, context={"dataset.num_classes": 5})
    space = _space(dino_schema, write, "base: none\nparameters:\n  model.num_queries: {values: [300, 900]}\nfixed:\n  model.num_select: 300\n",
                   name="ok.yaml", context={"dataset.num_classes": 5})  # fmt: skip
    assert space["model.num_select"].value == 300


def test_indexed_path_can_be_tuned(dino_schema, write):
    space = _space(dino_schema, write, "base: none\nparameters:\n  dataset.val_data_sources[0].image_dir: {values: [/a, /b]}\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert space.suggest(study.ask())["dataset.val_data_sources[0].image_dir"] in ("/a", "/b")


def test_merge_rules_between_files(dino_schema, write):
    write("base.yaml", "base: none\nparameters:\n  model.backbone: {values: [resnet_18, resnet_34], weights: [1, 3]}\n"
          "  train.optim.lr: {min: 1.0e-5, max: 1.0e-3, scale: linear}\n")  # fmt: skip
    space = _space(dino_schema, write, """
        base: base.yaml
        parameters:
          model.backbone: {values: [resnet_18, resnet_34, resnet_50]}   # new options drop old weights
          train.optim.lr: {values: [1.0e-4, 2.0e-4]}                    # options replace the range
        """)  # fmt: skip
    assert space["model.backbone"].weights is None and len(space["model.backbone"].choices) == 3
    assert space["train.optim.lr"].choices == (1e-4, 2e-4)
    space = _space(dino_schema, write, "base: base.yaml\nparameters:\n  model.backbone: {weights: [1, 1]}\n", name="w.yaml")
    assert space["model.backbone"].weights == (1.0, 1.0)


def test_parents_not_sampled_come_from_context_then_template_then_schema(dino_schema, write):
    text = "base: none\nparameters:\n  dataset.augmentation.train_random_crop_max: {min: 100, max: 700}\n"
    template = {"dataset": {"augmentation": {"train_random_crop_min": 500}}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = _space(dino_schema, write, text, template=template)
    assert all(space.suggest(study.ask())["dataset.augmentation.train_random_crop_max"] >= 500 for _ in range(30))
    space = _space(dino_schema, write, text, name="b.yaml", template=template,
                   context={"dataset.augmentation.train_random_crop_min": 650})  # fmt: skip
    assert all(space.suggest(study.ask())["dataset.augmentation.train_random_crop_max"] >= 650 for _ in range(30))
    space = _space(dino_schema, write, text, name="c.yaml")  # schema default 384
    assert min(space.suggest(study.ask())["dataset.augmentation.train_random_crop_max"] for _ in range(60)) < 500
