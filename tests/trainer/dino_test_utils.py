"""Helpers for the trainer tests: a CPU-sized spec and a runner for ``python -m dino``.
(A uniquely named module: test folders have no ``__init__.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from dino.data.synth import DatasetPaths

# The CPU smoke profile: a DINO with every part present (two-stage query selection,
# contrastive denoising, deformable encoder/decoder, aux losses) at toy width.
TINY_MODEL = {
    "backbone": "resnet_tiny",
    "hidden_dim": 64,
    "nheads": 4,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 128,
    "num_queries": 20,
    "num_select": 20,
    "num_feature_levels": 3,
    "return_interm_indices": [1, 2, 3],
    "dn_number": 5,
}
TINY_AUGMENTATION = {
    "scales": [64],
    "train_random_resize": [64],
    "train_random_crop_min": 64,  # no crop: at 64 px it costs more than it teaches
    "train_random_crop_max": 64,
    "random_resize_max_size": 96,
    "test_random_resize": 64,
}


def tiny_spec(data: DatasetPaths, results_dir: Path, num_classes: int | None = None, **sections) -> dict:
    """A spec dict for ``data`` on CPU; ``sections`` are merged one level deep
    (e.g. ``train={"num_epochs": 2}``)."""
    spec = {
        "results_dir": str(results_dir),
        "model": dict(TINY_MODEL),
        "dataset": {
            "train_data_sources": [{"image_dir": data.train.image_dir, "json_file": data.train.json_file}],
            "val_data_sources": [{"image_dir": data.val.image_dir, "json_file": data.val.json_file}],
            "num_classes": num_classes if num_classes is not None else len(data.categories) + 1,
            "batch_size": 4,
            "workers": 0,
            "augmentation": dict(TINY_AUGMENTATION),
        },
        "train": {"num_epochs": 2, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(spec.get(name), dict):
            spec[name].update(values)
        else:
            spec[name] = values
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_status(results_dir: Path, task: str = "train") -> list[dict]:
    path = Path(results_dir) / task / "status.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_dino(*args: str, timeout: float = 240, env_extra: dict[str, str] | None = None,
             **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dino", *args], capture_output=True, text=True, timeout=timeout,
                          env={**dino_env(), **(env_extra or {})}, **popen)


def dino_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env
