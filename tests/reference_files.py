"""Where NVIDIA's TAO DINO reference files are (``shared/reference/tao-dino``).

The folder sits beside the checkout (``<checkout>/../shared``) or, for a worktree kept
one level deeper, further up; a checkout may also hold its own ``shared/``. Found once
here so every test folder reads the same files.
"""

from __future__ import annotations

from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _find() -> Path:
    for base in (_REPO, *_REPO.parents):
        candidate = base / "shared" / "reference" / "tao-dino"
        if candidate.is_dir():
            return candidate
    return _REPO.parent / "shared" / "reference" / "tao-dino"  # missing: tests say which file


TAO_DIR = _find()
TAO_TEMPLATE = TAO_DIR / "spec_template_train.yaml"
