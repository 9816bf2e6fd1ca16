"""``model_best.pth``: the best validation epoch keeps its checkpoint whatever
``train.checkpoint_interval`` keeps, across a resume, and it is the model of that epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dino.checkpoint import BEST, BEST_RECORD, BestCheckpoint, load_checkpoint

from dino_test_utils import read_status, run_dino, tiny_spec, write_spec


def _ckpt(path: Path, tag: str) -> str:
    path.write_text(tag)
    return str(path)


def test_only_a_strict_improvement_of_a_validation_moves_it(tmp_path):
    best = BestCheckpoint(str(tmp_path), "val_mAP50")
    assert best.offer({"val_mAP50": "0.2"}, 0, 5, validated=True)
    best.keep(_ckpt(tmp_path / "e0", "epoch 0"))
    assert (tmp_path / BEST).read_text() == "epoch 0"
    assert not best.offer({"val_mAP50": "0.2"}, 1, 10, validated=True)  # a tie keeps the earlier epoch
    assert best.keep(_ckpt(tmp_path / "e1", "epoch 1")) is None
    assert not best.offer({"val_mAP50": "0.9"}, 2, 15, validated=False)  # a sticky kpi, no validation
    assert not best.offer({"val_mAP50": "nan"}, 3, 20, validated=True)
    assert best.offer({"val_mAP50": "0.5"}, 4, 25, validated=True)
    assert best.state() == {"metric": "val_mAP50", "value": 0.5, "epoch": 4, "step": 25}
    best.keep(_ckpt(tmp_path / "e4", "epoch 4"))
    assert (tmp_path / BEST).read_text() == "epoch 4"
    assert json.loads((tmp_path / BEST_RECORD).read_text())["epoch"] == 4


def test_a_loss_is_better_when_lower_and_an_empty_metric_keeps_nothing(tmp_path):
    best = BestCheckpoint(str(tmp_path), "val_loss")
    assert best.offer({"val_loss": 3.0}, 0, 1, validated=True)
    assert not best.offer({"val_loss": 4.0}, 1, 2, validated=True)
    assert best.offer({"val_loss": 2.5}, 2, 3, validated=True)
    off = BestCheckpoint(str(tmp_path / "off"), "")
    assert not off.offer({"val_mAP50": "0.9"}, 0, 1, validated=True) and off.state() is None


def test_a_resumed_run_knows_the_best_so_far_and_repairs_a_cut_keep(tmp_path):
    resumed = BestCheckpoint(str(tmp_path), "val_mAP50", {"metric": "val_mAP50", "value": 0.7, "epoch": 3, "step": 9})
    assert not resumed.offer({"val_mAP50": "0.6"}, 4, 12, validated=True)
    # killed after epoch 3's checkpoint, before model_best.pth moved: the resume finishes it
    resumed.repair(_ckpt(tmp_path / "latest", "epoch 3"), ckpt_epoch=3)
    assert (tmp_path / BEST).read_text() == "epoch 3" and resumed.recorded_epoch() == 3
    other_metric = BestCheckpoint(str(tmp_path), "val_loss", {"metric": "val_mAP50", "value": 0.7, "epoch": 3, "step": 9})
    assert other_metric.state() is None  # a best of another metric is not this one's


def test_an_unknown_metric_is_refused_with_the_choices(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("results_dir: /tmp/x\n")
    proc = run_dino("train", "-e", str(spec), "train.best_checkpoint_metric=val_map50")
    assert proc.returncode == 2
    assert "train.best_checkpoint_metric 'val_map50' is not a validation metric" in proc.stderr
    assert "val_mAP50, val_mAP, val_loss" in proc.stderr


@pytest.fixture(scope="module")
def sparse_checkpoints(shapes_small, tmp_path_factory):
    """3 epochs with checkpoint_interval 10: only the last epoch gets its own file. With
    this seed the best val_mAP50 (and val_loss) is epoch 1's, not the last one."""
    root = tmp_path_factory.mktemp("best")
    spec = tiny_spec(shapes_small, root / "results",
                     train={"num_epochs": 3, "checkpoint_interval": 10, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}})
    spec_path = write_spec(root / "spec.yaml", spec)
    proc = run_dino("train", "-e", str(spec_path))
    assert proc.returncode == 0, proc.stderr
    epochs = {line["epoch"]: line["kpi"] for line in read_status(root / "results") if "epoch" in line}
    return {"root": root, "spec": spec_path, "train": root / "results" / "train", "epochs": epochs}


def test_the_best_epoch_keeps_its_checkpoint_between_sparse_epoch_files(sparse_checkpoints):
    run = sparse_checkpoints
    values = {e: float(kpi["val_mAP50"]) for e, kpi in run["epochs"].items()}
    best_epoch = max(values, key=lambda e: (values[e], -e))
    assert best_epoch != max(values) and values[best_epoch] > 0, f"precondition: the best epoch is not the last {values}"
    names = sorted(p.name for p in run["train"].glob("*.pth"))
    assert names == ["dino_model_latest.pth", "model_best.pth", "model_epoch_002_step_18.pth"]
    record = json.loads((run["train"] / BEST_RECORD).read_text())
    assert record["epoch"] == best_epoch and record["value"] == values[best_epoch] and record["metric"] == "val_mAP50"
    ckpt = load_checkpoint(str(run["train"] / BEST))
    assert ckpt["epoch"] == best_epoch and float(ckpt["kpi"]["val_mAP50"]) == values[best_epoch]
    last = load_checkpoint(str(run["train"] / "model_epoch_002_step_18.pth"))
    assert any(not torch.equal(ckpt["model"][k], last["model"][k]) for k in ckpt["model"])
    lines = [line for line in read_status(run["root"] / "results") if "best_checkpoint" in line]
    assert [line["best_checkpoint"]["epoch"] for line in lines][-1] == best_epoch


def test_evaluating_the_best_checkpoint_reproduces_its_epoch(sparse_checkpoints):
    """It is that epoch's model: evaluated on the val split it scores that epoch's val_mAP50."""
    run = sparse_checkpoints
    record = json.loads((run["train"] / BEST_RECORD).read_text())
    proc = run_dino("evaluate", "-e", str(run["spec"]), f"evaluate.checkpoint={run['train'] / BEST}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run["root"] / "results" / "evaluate" / "metrics.json").read_text())
    assert metrics["mAP50"] == pytest.approx(float(run["epochs"][record["epoch"]]["val_mAP50"]), abs=1e-9)


def test_resuming_keeps_the_best_of_the_epochs_before(shapes_small, tmp_path):
    """Train 2 epochs, then continue to 3: the best epoch (1) stays the best checkpoint,
    as it would without the restart, since the checkpoint carries the best so far."""
    spec = tiny_spec(shapes_small, tmp_path / "results",
                     train={"num_epochs": 2, "checkpoint_interval": 10, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}})
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    assert run_dino("train", "-e", str(spec_path)).returncode == 0
    proc = run_dino("train", "-e", str(spec_path), "train.num_epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "Resuming from" in proc.stdout
    epochs = {line["epoch"]: float(line["kpi"]["val_mAP50"]) for line in read_status(tmp_path / "results")
              if "epoch" in line}
    assert sorted(epochs) == [0, 1, 2] and epochs[2] < epochs[1]
    record = json.loads((tmp_path / "results" / "train" / BEST_RECORD).read_text())
    assert record["epoch"] == 1
    assert load_checkpoint(str(tmp_path / "results" / "train" / BEST))["epoch"] == 1
