"""Launchers by name (``launcher.name``): ``local`` (subprocess) and ``docker`` (a
container per trial), or a user's class as ``package.module:Class``.

Implementations are imported only when asked for, so ``local`` works on a machine
without the Docker SDK. Options (``launcher.options``) are checked against the
launcher's constructor; its keyword-only ``client`` is the orchestrator's to give.
"""

from __future__ import annotations

from automl.launchers.base import JobHandle, JobResult, JobSpec, Launcher
from automl.plugins import PluginFamily

LAUNCHERS: PluginFamily[Launcher] = PluginFamily(
    "launcher",
    {
        "local": "automl.launchers.local:LocalLauncher",
        "docker": "automl.launchers.docker:DockerLauncher",
    },
    where="launcher.name",
    options_where="launcher.options",
    supplied=("client",),
)


def get_launcher(name: str, **options: object) -> Launcher:
    """A launcher chosen by name, built with ``options`` (checked as the config's are)."""
    return LAUNCHERS.build(name, options)


__all__ = ["LAUNCHERS", "JobHandle", "JobResult", "JobSpec", "Launcher", "get_launcher"]
