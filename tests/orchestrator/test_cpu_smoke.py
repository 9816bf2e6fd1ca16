"""The CPU smoke study's promise: its profile's best-known settings train a detector that
finds the objects. One trial of the smoke profile's ``cpu:`` variant, exactly as
``automl run --profile smoke`` runs it without a GPU (its generated data, model, 10 epochs
and schema), with the settings of the sweep in ``bench/cpu_smoke.md`` enqueued."""

import os

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from automl.config import build_run_config, read_profile
from automl.config.loader import deep_merge
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

# the sweep's best lr (bench/cpu_smoke.md) with the values the sweep held fixed
BEST_KNOWN = {
    "train.optim.lr": 1.0e-3,
    "train.optim.lr_backbone": 1.0e-3,
    "train.optim.lr_linear_proj_mult": 0.1,
    "train.optim.weight_decay": 1.0e-4,
    "model.dn_box_noise_scale": 0.4,
    "dataset.augmentation.horizontal_flip_prob": 0.5,
}


@pytest.mark.slow
def test_the_cpu_profile_best_known_settings_reach_map50_one_half(tmp_path):
    profile = read_profile("smoke")
    raw = deep_merge(profile, {"study": {"name": "cpu-smoke-best"}, "budget": {"n_trials": 1},
                               "devices": "cpu", "workspace": str(tmp_path / "ws")})
    cfg = build_run_config(raw, use_cpu_variant=True, where="test")
    assert cfg.fixed["train.num_epochs"] == 10 and cfg.data.synth is not None and cfg.data.synth.class_colours
    open_study(cfg).enqueue_trial(BEST_KNOWN)
    run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))

    (trial,) = optuna.load_study(study_name="cpu-smoke-best", storage=cfg.storage_url).trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("failure")
    assert sorted(trial.intermediate_values) == list(range(10))
    assert trial.value >= 0.5, trial.intermediate_values
