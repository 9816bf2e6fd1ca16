"""Fixtures for the trainer tests: generated shape datasets, one intra-op thread."""

from __future__ import annotations

import pytest

from dino.data.synth import DatasetPaths, generate_dataset


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine run ~20x faster without intra-op threads; a
    module takes it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> DatasetPaths:
    """24 train + 8 val images of 2 classes at 64 px: enough for pipeline tests."""
    return generate_dataset(str(tmp_path_factory.mktemp("shapes_small")), 32, 2, 64, seed=11, val_fraction=0.25,
                            objects=(1, 2), object_size=(0.25, 0.6))


@pytest.fixture(scope="session")
def shapes_learnable(tmp_path_factory) -> DatasetPaths:
    """96 images (72 train, 24 val) of 2 classes, one big shape each at 64 px: the tiny
    model scores above zero on it within 2 epochs, so runs can be compared by their scores
    (18 steps per epoch at batch 4)."""
    return generate_dataset(str(tmp_path_factory.mktemp("shapes_learnable")), 96, 2, 64, seed=11, val_fraction=0.25,
                            objects=(1, 1), object_size=(0.3, 0.6))


@pytest.fixture(scope="session")
def trained_shapes(shapes_learnable, tmp_path_factory):
    """A tiny model trained 2 epochs on ``shapes_learnable``, for the tests of evaluate,
    inference and the ONNX contract (about 10 s of one core). Measured:
    val_mAP 0.020, val_mAP50 0.068 after the 2nd epoch: small, but above zero, so scores can
    be compared meaningfully. Returns the data, the spec file and the results dir."""
    from dino_test_utils import read_status, run_dino, tiny_spec, write_spec

    root = tmp_path_factory.mktemp("trained_shapes")
    data = shapes_learnable
    spec = tiny_spec(data, root / "results", train={"num_epochs": 2, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}})
    spec_path = write_spec(root / "spec.yaml", spec)
    proc = run_dino("train", "-e", str(spec_path))
    assert proc.returncode == 0, proc.stderr
    last = [line for line in read_status(root / "results") if "epoch" in line][-1]
    return {"data": data, "spec": spec_path, "results": root / "results", "last_kpi": last["kpi"]}
