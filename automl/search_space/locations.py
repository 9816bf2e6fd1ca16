"""Where the bundled train schemas and curated spaces live.

``search_spaces/`` sits at the top of the repository, beside the ``automl`` package, so
an editable install or a checkout on ``PYTHONPATH`` finds it through ``automl.__file__``.
Set ``AUTOML_SEARCH_SPACES`` to use another folder (for example in a container that
copies the folder elsewhere, or a wheel install that does not carry it).
"""

from __future__ import annotations

import os
from pathlib import Path

import automl
from automl.errors import ConfigError

ENV_VAR = "AUTOML_SEARCH_SPACES"


def search_spaces_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{ENV_VAR}={override} is not a directory")
        return path
    path = Path(automl.__file__).resolve().parent.parent / "search_spaces"
    if not path.is_dir():
        raise ConfigError(
            f"cannot find the bundled search_spaces/ folder (looked in {path}); "
            f"set {ENV_VAR} to it or pass --schema and --space explicitly"
        )
    return path


def default_schema_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "train.schema.json"


def default_space_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "default_space.yaml"


def default_template_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "spec_template_train.yaml"
