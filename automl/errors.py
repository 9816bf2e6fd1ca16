"""Errors a user can cause: printed as one clear message, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, schema, dataset, flags). The message says what, where and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """The run config or a space override file is invalid."""


class SchemaError(UserError):
    """A train schema is malformed (not JSON, min > max, depends_on cycle, ...)."""


class DatasetError(UserError):
    """A data source cannot be staged or fails preflight."""
