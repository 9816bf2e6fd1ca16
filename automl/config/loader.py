"""Load a run config from a packaged profile or a YAML file, apply flags, validate once.

A profile may carry a ``cpu:`` block: a partial config merged over the rest when the
run has no GPU, so ``automl run --profile smoke`` finishes on a laptop too.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from automl.config.run_config import RunConfig
from automl.errors import ConfigError
from dino.config.yaml_values import load_yaml

PROFILE_PACKAGE = "automl.profiles"


def available_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(PROFILE_PACKAGE).iterdir()
        if p.name.endswith(".yaml")
    )


def read_profile(name: str) -> dict[str, Any]:
    path = resources.files(PROFILE_PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown profile {name!r}; available: {', '.join(available_profiles())}"
        )
    return _parse_yaml(path.read_text(), f"profile {name}")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a YAML mapping, got {type(data).__name__}")
    return data


# sections whose ``name`` (or ``extractor``) picks a plugin, and the key of its options
_PLUGIN_KEYS = {"sampler": ("name", None), "pruner": ("name", None), "launcher": ("name", "options"),
                "metric": ("extractor", "extractor_options")}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge, everything else is replaced. A section of
    ``over`` that picks another plugin (``pruner: {name: none}`` over a median pruner)
    drops the options of the plugin below, which the new one would refuse."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            below = out[key]
            if key in _PLUGIN_KEYS:
                name_key, options_key = _PLUGIN_KEYS[key]
                if name_key in value and value[name_key] != below.get(name_key):
                    if options_key is None:  # options beside the name: the section is replaced
                        below = {}
                    else:
                        below = {k: v for k, v in below.items() if k != options_key}
            out[key] = deep_merge(below, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def build_run_config(raw: dict[str, Any], *, use_cpu_variant: bool, where: str) -> RunConfig:
    """Validate ``raw`` (after merging its ``cpu:`` block when asked) into a RunConfig."""
    raw = dict(raw)
    cpu_block = raw.pop("cpu", None) or {}
    if use_cpu_variant and cpu_block:
        raw = deep_merge(raw, cpu_block)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    except ConfigError as exc:  # a plugin refused its options (automl.plugins)
        raise ConfigError(f"invalid run config ({where}):\n  " + str(exc).replace("\n", "\n  ")) from None


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = [f"invalid run config ({where}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README's config reference)"
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")  # a rule across sections names its keys
    return "\n".join(lines)
