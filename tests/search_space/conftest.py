"""Schemas for the search-space tests: TAO's DINO schema, ours, and a non-DINO one."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl.search_space import TrainSchema, default_schema_path, default_space_path

from reference_files import tao_file
from space_schemas import classifier_schema_text

optuna.logging.set_verbosity(optuna.logging.WARNING)

@pytest.fixture(scope="session")
def tao_schema_path() -> Path:
    return tao_file("train.schema.json")


@pytest.fixture(scope="session")
def tao_schema(tao_schema_path) -> TrainSchema:
    return TrainSchema.load(tao_schema_path)


@pytest.fixture(scope="session")
def dino_schema() -> TrainSchema:
    return TrainSchema.load(default_schema_path())


@pytest.fixture(scope="session")
def curated_space_path() -> Path:
    return default_space_path()


@pytest.fixture(scope="session")
def classifier_schema() -> TrainSchema:
    return TrainSchema.from_json(classifier_schema_text(), "classifier.schema.json")


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path of a file in a fresh folder."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
