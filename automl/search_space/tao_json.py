"""Read TAO-format JSON files.

TAO writes unbounded maxima as the bare token ``Infinity``, which strict JSON parsers
reject. We accept ``Infinity`` / ``-Infinity`` (as ``math.inf``) and refuse ``NaN``, which
has no meaning as a bound or default.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from automl.errors import SchemaError


def _parse_constant(token: str) -> float:
    if token == "Infinity":
        return math.inf
    if token == "-Infinity":
        return -math.inf
    raise ValueError(f"{token} is not allowed in a train schema (use a number or Infinity)")


def parse_tao_json(text: str, source: str) -> dict[str, Any]:
    """Parse TAO JSON text; ``source`` names the file in error messages."""
    try:
        data = json.loads(text, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise SchemaError(f"{source}: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaError(
            f"{source}: a train schema must be a JSON object at the top level, "
            f"got {type(data).__name__}"
        )
    return data


def load_tao_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"train schema {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read train schema {path}: {exc}") from None
    return parse_tao_json(text, str(path))
