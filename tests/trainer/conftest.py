"""Fixtures for the trainer tests: generated shape datasets."""

from __future__ import annotations

import pytest

from dino.data.synth import DatasetPaths, generate_dataset


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> DatasetPaths:
    """24 train + 8 val images of 2 classes at 64 px: enough for pipeline tests."""
    return generate_dataset(str(tmp_path_factory.mktemp("shapes_small")), 32, 2, 64, seed=11, val_fraction=0.25,
                            objects=(1, 2), object_size=(0.25, 0.6))
