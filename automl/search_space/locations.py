"""Where the bundled train schemas and curated spaces live.

``search_spaces/`` is a package of its own (data files only, beside ``automl`` in the
repository and in an installed wheel), so it is found through ``importlib.resources``
in a checkout, an editable install and a plain ``pip install`` alike. Set
``AUTOML_SEARCH_SPACES`` to use another folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from automl.errors import ConfigError

ENV_VAR = "AUTOML_SEARCH_SPACES"
PACKAGE = "search_spaces"


def search_spaces_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        chosen = Path(override).expanduser()
        if not chosen.is_dir():
            raise ConfigError(f"{ENV_VAR}={override} is not a directory")
        return chosen
    try:
        path: Path | None = Path(str(resources.files(PACKAGE)))
    except ModuleNotFoundError:
        path = None
    if path is None or not (path / "dino").is_dir():
        raise ConfigError(
            f"cannot find the bundled {PACKAGE}/ folder (the package is not installed, or holds no "
            f"dino/ schemas); reinstall dino-automl, set {ENV_VAR} to the folder, or pass --schema and "
            "--space explicitly"
        )
    return path


def default_schema_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "train.schema.json"


def default_space_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "default_space.yaml"


def default_template_path(network: str = "dino") -> Path:
    return search_spaces_dir() / network / "spec_template_train.yaml"
