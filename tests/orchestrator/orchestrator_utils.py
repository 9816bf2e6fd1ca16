"""A tiny COCO dataset and a run config whose trials run the scripted trainer."""

import json
import sys
from pathlib import Path

import yaml
from PIL import Image

HERE = Path(__file__).parent
SCRIPTED = HERE / "scripted_trainer.py"


def write_coco(root: Path, n_images: int = 6, size: int = 32) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n_images + 1):
        Image.new("RGB", (size, size), (i * 20 % 255, 80, 160)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": size, "height": size})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [4, 4, 12, 10],
                     "area": 120, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def scripted_config(tmp_path: Path, coco_dirs, **over) -> dict:
    """A run config (as data) for the scripted trainer; ``over`` is merged on top."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"base": "none", "parameters": {"train.optim.lr": {"min": 1e-5, "max": 1e-3}}}))
    cfg = {
        "study": {"name": "scripted", "heartbeat_interval": 1, "grace_period": 4},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "median", "warmup_epochs": 2, "startup_trials": 1},
        "launcher": {"name": "local", "grace_period": 3, "poll_interval": 0.1},
        "trainer": {"command": [sys.executable, str(SCRIPTED)], "space": str(space)},
        "data": {"train": str(coco_dirs[0]), "val": str(coco_dirs[1])},
        "fixed": {"train.num_epochs": 5, "dataset.batch_size": 2},
        "budget": {"n_trials": 4, "max_consecutive_failures": 3},
        "devices": "cpu",
        "workspace": str(tmp_path / "ws"),
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            same_plugin = value.get("name", cfg[key].get("name")) == cfg[key].get("name")
            cfg[key] = {**cfg[key], **value} if same_plugin else dict(value)  # another plugin: its own options
        else:
            cfg[key] = value
    return cfg


def scripted_command() -> list[str]:
    """The scripted trainer as ``... train`` so the study can derive its export command."""
    return [sys.executable, str(SCRIPTED), "train"]


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
