"""YAML reading with YAML 1.2 numbers: ``1e-4`` is a float.

PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``), so ``lr: 1e-4`` in a spec,
a profile or a ``--fixed`` value would arrive as the string ``'1e-4'`` and fail the schema
(or worse, be compared as text). Every YAML the project reads goes through :func:`load_yaml`.
"""

from __future__ import annotations

import re
from typing import IO, Any

import yaml


class NumberLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load`` with YAML 1.2 exponent floats."""
    return yaml.load(stream, Loader=NumberLoader)  # noqa: S506 - NumberLoader is a SafeLoader
