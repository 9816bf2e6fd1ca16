"""Best means best with the real trainer under the orchestrator: a study minimising
val_loss, checkpoints every 10 epochs of 3, a best epoch that is not the last. The
checkpoint best.json names and the export uses is that epoch's model."""

import json
import os
from pathlib import Path

import optuna
import pytest
import torch
from rich.console import Console

from automl.config import build_run_config, read_profile
from automl.config.loader import deep_merge
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

# one point of the CPU smoke space, fixed so the curve is the same every run (measured:
# val_loss 17.9, 12.9, 16.6 over the 3 epochs)
POINT = {"train.optim.lr": 0.002, "train.optim.lr_backbone": 0.001, "train.optim.lr_linear_proj_mult": 1.0,
         "train.optim.weight_decay": 2.3e-05, "model.dn_box_noise_scale": 0.8,
         "dataset.augmentation.horizontal_flip_prob": 0.38}


@pytest.mark.slow
def test_the_best_val_loss_epoch_is_reported_kept_and_exported(tmp_path):
    from dino.data.synth import generate_dataset

    data = generate_dataset(str(tmp_path / "data"), 32, 2, 64, seed=11, val_fraction=0.25, objects=(1, 2),
                            object_size=(0.25, 0.6))
    raw = deep_merge(read_profile("smoke"), read_profile("smoke")["cpu"])
    raw.pop("cpu")
    raw = deep_merge(raw, {
        "study": {"name": "best-real"}, "metric": {"name": "val_loss"}, "pruner": {"name": "none"},
        "data": {"train": str(Path(data.root) / "train"), "val": str(Path(data.root) / "val"), "synth": None},
        "fixed": {"train.num_epochs": 3, "train.checkpoint_interval": 10, "dataset.num_classes": 3, "train.seed": 7,
                  "train.optim.lr_steps": [100]},
        "budget": {"n_trials": 1}, "devices": "cpu", "workspace": str(tmp_path / "ws"),
    })
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    open_study(cfg).enqueue_trial(POINT)
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))

    trial = optuna.load_study(study_name="best-real", storage=cfg.storage_url).trials[0]
    curve = trial.intermediate_values
    best_epoch = min(curve, key=curve.get)
    assert sorted(curve) == [0, 1, 2] and best_epoch != 2, f"precondition: the best epoch is not the last {curve}"
    assert trial.value == curve[best_epoch]

    train = Path(trial.user_attrs["results_dir"]) / "train"
    assert not list(train.glob(f"model_epoch_{best_epoch:03d}_step_*.pth"))  # checkpoint_interval kept no file of it
    best = json.loads((tmp_path / "ws" / "best-real" / "best.json").read_text())
    assert best["checkpoint"] == str(train / "model_best.pth") and best["checkpoint_epoch"] == best_epoch
    assert best["checkpoint_is_value_epoch"]
    kept = torch.load(train / "model_best.pth", map_location="cpu", weights_only=False)
    assert kept["epoch"] == best_epoch and kept["kpi"]["val_loss"] == trial.value  # that epoch's weights
    assert outcome.exported_model is not None and outcome.exported_model.stat().st_size > 10_000
    assert f"export.checkpoint={train / 'model_best.pth'}" in outcome.exported_model.with_suffix(".log").read_text()
