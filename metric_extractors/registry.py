"""Extractors by name (``tao_status``, ``regex``) or by dotted import path.

A user extractor is any class (or factory) importable as ``package.module:ClassName`` or
``package.module.ClassName`` whose instances satisfy :class:`MetricExtractor`. It is
imported and checked when the run config is loaded, so a typo fails before GPU time.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

from automl.errors import ConfigError
from metric_extractors.base import SOURCES, MetricExtractor

# name -> "module:attribute"; imported lazily so listing names costs nothing
_BUILTIN: dict[str, str] = {
    "tao_status": "metric_extractors._tao_status:TaoStatusExtractor",
    "regex": "metric_extractors._regex:RegexExtractor",
}


def available_extractors() -> list[str]:
    return sorted(_BUILTIN)


def register_extractor(name: str, target: str) -> None:
    """Make ``target`` (``module:attr``) available under ``name``."""
    _BUILTIN[name] = target


def _import(target: str) -> Callable[..., Any]:
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        close = difflib.get_close_matches(target, available_extractors(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"metric extractor {target!r}: not a known name ({', '.join(available_extractors())}) "
            f"nor an import path; {hint}A user extractor is named 'package.module:ClassName'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"metric extractor {target!r}: cannot import module {module_name!r} ({exc}). "
            "Install the package or put it on PYTHONPATH."
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"metric extractor {target!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise ConfigError(f"metric extractor {target!r}: {attr!r} is not a class or factory")
    return obj


def get_extractor(name_or_path: str, **options: Any) -> MetricExtractor:
    """A new extractor (extractors are stateful: one per trial and file)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(
            f"metric extractor: expected a name ({', '.join(available_extractors())}) or an "
            f"import path, got {name_or_path!r}"
        )
    target = _BUILTIN.get(name_or_path, name_or_path)
    factory = _import(target)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise ConfigError(
            f"metric extractor {name_or_path!r}: bad options {sorted(options)} ({exc}); "
            f"it accepts {_describe_params(factory)}"
        ) from None
    except ValueError:  # no signature (builtins): let the call decide
        pass
    try:
        extractor = factory(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"metric extractor {name_or_path!r}: options {options!r} were rejected: {exc}"
        ) from None
    check_extractor(extractor, name_or_path)
    return extractor


def check_extractor(extractor: Any, label: str) -> None:
    """Raise ConfigError unless ``extractor`` satisfies the protocol."""
    problems = []
    if not isinstance(getattr(extractor, "name", None), str):
        problems.append("no string attribute 'name'")
    if getattr(extractor, "source", None) not in SOURCES:
        problems.append(f"attribute 'source' must be one of {SOURCES}, got {getattr(extractor, 'source', None)!r}")
    if not callable(getattr(extractor, "feed", None)):
        problems.append("no method 'feed(data: bytes) -> list[EpochMetrics]'")
    if problems:
        raise ConfigError(
            f"metric extractor {label!r} does not satisfy the MetricExtractor protocol: "
            + "; ".join(problems)
        )


def _describe_params(factory: Callable[..., Any]) -> str:
    try:
        params = [p for p in inspect.signature(factory).parameters.values()]
    except (TypeError, ValueError):
        return "unknown options"
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return ", ".join(names) if names else "no options"
