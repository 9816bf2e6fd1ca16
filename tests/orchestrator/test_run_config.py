"""The run config is validated once with messages that name the field."""

import argparse
from pathlib import Path

import pytest
from rich.console import Console

from automl.cli.run import load_config_from_args
from automl.config import available_profiles, build_run_config, read_profile
from automl.config.run_config import MetricSettings
from automl.errors import ConfigError


def test_direction_inferred_from_metric_name():
    assert MetricSettings(name="val_mAP50").resolved_direction() == "maximize"
    assert MetricSettings(name="val_mAP").resolved_direction() == "maximize"
    assert MetricSettings(name="val_loss").resolved_direction() == "minimize"
    assert MetricSettings(name="weird", direction="minimize").resolved_direction() == "minimize"
    with pytest.raises(ValueError, match="metric.direction"):
        MetricSettings(name="weird").resolved_direction()


def test_unknown_key_is_reported_with_its_location():
    with pytest.raises(ConfigError) as err:
        build_run_config({"data": {"synth": {}}, "pruner": {"nmae": "median"}}, use_cpu_variant=False, where="x.yaml")
    assert "pruner.nmae" in str(err.value) and "x.yaml" in str(err.value)


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="budget.n_trials"):
        build_run_config({"data": {"synth": {}}, "budget": {"n_trials": 0}}, use_cpu_variant=False, where="x")
    with pytest.raises(ConfigError, match="sampler.name"):
        build_run_config({"data": {"synth": {}}, "sampler": {"name": "bogus"}}, use_cpu_variant=False, where="x")
    with pytest.raises(ConfigError, match="data.train"):
        build_run_config({"data": {}}, use_cpu_variant=False, where="x")
    with pytest.raises(ConfigError, match="metric"):
        build_run_config({"data": {"synth": {}}, "metric": {"name": "score"}}, use_cpu_variant=False, where="x")


def test_smoke_profile_has_the_skill_settings():
    assert "smoke" in available_profiles()
    cfg = build_run_config(read_profile("smoke"), use_cpu_variant=False, where="smoke")
    assert cfg.budget.n_trials == 10
    assert cfg.fixed["dataset.num_classes"] == 5
    assert cfg.fixed["train.num_epochs"] == 10
    assert cfg.fixed["train.checkpoint_interval"] == 10
    assert cfg.fixed["train.validation_interval"] == 1
    assert cfg.data.synth.num_classes == 4
    # every rule of the composite waits for 2 validations (epoch 1 is noise)
    assert cfg.pruner.name == "any"
    assert [r.name for r in cfg.pruner.options.rules] == ["not_learning", "median"]
    assert all(r.options.warmup_epochs >= 2 for r in cfg.pruner.options.rules)
    assert cfg.devices.trials_per_slot == "auto"


def _args(**kw):
    base = dict(profile="smoke", config=None, study_name=None, storage=None, n_trials=None, timeout=None,
                devices=None, workspace=None, launcher=None, train_data=None, val_data=None, fixed=[], seed=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_cpu_variant_and_flags_win(tmp_path):
    cfg = load_config_from_args(_args(devices="cpu", n_trials=3, fixed=["train.num_epochs=2"],
                                      workspace=tmp_path), Console(file=open("/dev/null", "w")))
    assert cfg.fixed["model.backbone"] == "resnet_tiny"  # from the cpu block
    assert cfg.budget.n_trials == 3  # flag beats the cpu block
    assert cfg.fixed["train.num_epochs"] == 2
    assert cfg.workspace == tmp_path


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="smoke"):
        read_profile("nope")


def test_bad_devices_flag():
    with pytest.raises(ConfigError, match="--devices"):
        load_config_from_args(_args(devices="gpu0"), Console(file=open("/dev/null", "w")))


def test_smoke_profile_searches_a_from_scratch_learning_rate_on_gpus_only():
    """On GPUs the smoke study samples lr within 5e-5..2.5e-4 (in the GPU smoke study on
    main every learner had 5.7e-5..1.8e-4, none at 2.9e-4 or above learned) and 600 or 900
    queries; the CPU variant keeps its own space."""
    import optuna
    import yaml

    from automl.search_space import SearchSpace, TrainSchema, load_space_overrides
    from automl.search_space.locations import default_schema_path, default_template_path
    from automl.study.runner import resolve_project_path

    raw = read_profile("smoke")
    gpu = build_run_config(raw, use_cpu_variant=False, where="smoke")
    cpu = build_run_config(raw, use_cpu_variant=True, where="smoke")
    assert Path(gpu.trainer.space).name == "smoke_gpu_space.yaml"
    assert Path(cpu.trainer.space).name == "smoke_cpu_space.yaml"

    template = yaml.safe_load(default_template_path().read_text())
    space = SearchSpace.build(TrainSchema.load(default_schema_path()),
                              overrides=load_space_overrides(resolve_project_path(gpu.trainer.space, None)),
                              context=dict(gpu.fixed), template=template)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = [space.suggest(study.ask()) for _ in range(200)]
    rates = [d["train.optim.lr"] for d in draws]
    assert 5e-5 <= min(rates) and max(rates) <= 2.5e-4
    # log scale: about half the draws fall below the geometric middle (1.12e-4)
    assert 0.4 < sum(r < 1.118e-4 for r in rates) / len(rates) < 0.6
    assert {d["model.num_queries"] for d in draws} == {600, 900}
