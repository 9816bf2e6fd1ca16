"""Fixtures of the orchestrator tests (helpers live in orchestrator_utils.py)."""

import pytest

from orchestrator_utils import write_coco


@pytest.fixture
def coco_dirs(tmp_path):
    return write_coco(tmp_path / "data" / "train"), write_coco(tmp_path / "data" / "val", 4)
