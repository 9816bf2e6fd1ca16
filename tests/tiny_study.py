"""A one-trial study of the tiny DINO on generated data, for tests that need a real study
to have happened (the hand-off, locally and in containers). In ``tests/`` so that every
test folder can import it."""

from __future__ import annotations

from pathlib import Path

from automl.config import build_run_config
from dino.data.synth import generate_dataset

TINY = {"backbone": "resnet_tiny", "hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2,
        "dim_feedforward": 128, "num_queries": 20, "num_select": 20, "num_feature_levels": 3,
        "return_interm_indices": [1, 2, 3], "dn_number": 5}
AUG = {"scales": [64], "train_random_resize": [64], "train_random_crop_min": 64, "train_random_crop_max": 64,
       "random_resize_max_size": 96, "test_random_resize": 64}


def tiny_study_config(root: Path, study: str, launcher: dict | None = None, epochs: int = 2) -> tuple:
    """A one-trial study of the tiny DINO on generated data (one big shape per image, so it
    scores above zero within two epochs); returns the config and the data."""
    raw, data = tiny_study_raw(root, study, launcher, epochs)
    return build_run_config(raw, use_cpu_variant=False, where="test"), data


def tiny_study_raw(root: Path, study: str, launcher: dict | None = None, epochs: int = 2) -> tuple:
    """:func:`tiny_study_config` as the run config's raw mapping (what a ``--config`` YAML
    file holds), and the data."""
    data = generate_dataset(str(root / "data"), 96, 2, 64, seed=11, val_fraction=0.25, objects=(1, 1),
                            object_size=(0.3, 0.6))
    fixed = {f"model.{k}": v for k, v in TINY.items()}
    fixed.update({f"dataset.augmentation.{k}": v for k, v in AUG.items()})
    fixed.update({"dataset.num_classes": 3, "dataset.batch_size": 4, "dataset.workers": 0, "train.num_epochs": epochs,
                  "train.checkpoint_interval": 1, "train.seed": 7, "train.optim.lr": 0.002,
                  "train.optim.lr_steps": [100], "export.input_height": 64, "export.input_width": 64})
    raw = {
        "study": {"name": study}, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "launcher": launcher or {"name": "local"},
        "data": {"train": str(Path(data.train.image_dir).parent), "val": str(Path(data.val.image_dir).parent)},
        "fixed": fixed, "budget": {"n_trials": 1}, "devices": "cpu", "workspace": str(root / "ws"),
    }
    return raw, data
