"""Where NVIDIA's TAO DINO reference files are (``shared/reference/tao-dino``), and what a
test does when they are not there.

The folder is ``$AUTOML_TAO_REFERENCE`` when set, else ``shared/reference/tao-dino`` in the
checkout or in a folder above it (the sibling ``../shared`` of a working copy). A bare
clone has none: the tests that read these files skip, saying where they looked. On CI
(``CI=true``) they fail instead, so they cannot silently drop out of the suite there.
Tests ask through :func:`tao_file` inside the test (or a fixture), never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "AUTOML_TAO_REFERENCE"
_REPO = Path(__file__).resolve().parents[1]
_PARTS = ("shared", "reference", "tao-dino")


def _find() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    for base in (_REPO, *_REPO.parents):
        candidate = base.joinpath(*_PARTS)
        if candidate.is_dir():
            return candidate
    return _REPO.parent.joinpath(*_PARTS)  # where a working copy's sibling would be


TAO_DIR = _find()


def on_ci() -> bool:
    """``CI`` set to true (GitHub Actions, GitLab and most CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def tao_file(name: str) -> Path:
    """``name`` in the reference folder; the calling test is skipped (failed on CI) when absent."""
    path = TAO_DIR / name
    if path.is_file():
        return path
    searched = f"${ENV}" if os.environ.get(ENV) else f"{_REPO}/{'/'.join(_PARTS)} and the folders above it"
    reason = (f"TAO reference file {name} not found at {path} (searched {searched}); put NVIDIA's TAO DINO "
              f"reference files there or set {ENV} to their folder")
    if on_ci():
        pytest.fail(f"{reason}. CI=true requires them, so these tests cannot silently drop out", pytrace=False)
    pytest.skip(reason)
