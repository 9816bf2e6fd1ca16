"""The base of our pruner settings models (one per algorithm, see :mod:`._settings`)."""

from __future__ import annotations

from typing import Any, Literal

from optuna.pruners import BasePruner

from automl.plugins import PluginSettings


class PrunerOptions(PluginSettings):
    def build(self, **context: Any) -> BasePruner:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_direction(self, direction: Literal["maximize", "minimize"]) -> None:
        """Raise ValueError when this rule cannot judge a metric optimised in ``direction``
        (checked with the run config, before any trial)."""
