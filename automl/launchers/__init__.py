"""Launchers by name: ``local`` (subprocess) and ``docker`` (a container per trial).

Implementations are imported only when asked for, so ``local`` works on a machine
without the Docker SDK.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from automl.errors import ConfigError
from automl.launchers.base import JobHandle, JobResult, JobSpec, Launcher

_LAUNCHERS: dict[str, str] = {
    "local": "automl.launchers.local:LocalLauncher",
    "docker": "automl.launchers.docker:DockerLauncher",
}


def available_launchers() -> list[str]:
    return sorted(_LAUNCHERS)


def get_launcher(name: str, **options: Any) -> Launcher:
    """A launcher chosen by its name in the run config, built with ``options``."""
    target = _LAUNCHERS.get(name)
    if target is None:
        raise ConfigError(
            f"launcher {name!r} is unknown; choose one of: {', '.join(available_launchers())}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"launcher {name!r} is not available here: {exc}") from None
    factory = getattr(module, attr)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        accepted = ", ".join(inspect.signature(factory).parameters) or "no options"
        raise ConfigError(
            f"launcher {name!r}: bad options {sorted(options)} ({exc}); it accepts: {accepted}"
        ) from None
    return factory(**options)


__all__ = [
    "JobHandle",
    "JobResult",
    "JobSpec",
    "Launcher",
    "available_launchers",
    "get_launcher",
]
