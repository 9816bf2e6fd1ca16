"""The tiny CPU configuration learns: val_mAP50 rises over a few epochs."""

from __future__ import annotations

import pytest

from dino.data.synth import generate_dataset

from dino_test_utils import read_status, run_dino, tiny_spec, write_spec


@pytest.mark.slow
def test_val_map50_rises_on_big_shapes(tmp_path):
    """120 images (96 train) of one class, 1-2 big shapes each, 64 px, 6 epochs of 24 steps
    (about 30 s of one CPU core). Measured: 0.02-0.03 after epoch 0, 0.16-0.45 by epoch 5."""
    data = generate_dataset(str(tmp_path / "data"), 120, 1, 64, seed=1, val_fraction=0.2, objects=(1, 2),
                            object_size=(0.25, 0.6))
    spec = tiny_spec(data, tmp_path / "results",
                     train={"num_epochs": 6, "seed": 1234, "optim": {"lr": 0.002, "lr_steps": [5]}})
    proc = run_dino("train", "-e", str(write_spec(tmp_path / "spec.yaml", spec)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    curve = [float(line["kpi"]["val_mAP50"]) for line in read_status(tmp_path / "results") if "epoch" in line]
    print("val_mAP50 per epoch:", curve)
    assert len(curve) == 6
    assert max(curve[-2:]) >= curve[0] + 0.1, curve
    assert max(curve[-2:]) >= 2 * curve[0], curve
