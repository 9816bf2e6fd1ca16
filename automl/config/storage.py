"""Where a study lives: the storage URL and the workspace, resolved in one place.

Every command picks the storage the same way (``--storage``, else ``$AUTOML_STORAGE``,
else ``sqlite:///<workspace>/study.db``) and shows it only through :func:`redact_url`:
a PostgreSQL URL carries a password, and command output lands in CI logs and reports.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy.engine import make_url

from automl.errors import UserError

DEFAULT_WORKSPACE = Path("automl_workspace")
STORAGE_ENV = "AUTOML_STORAGE"
_URL_WITH_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@")


def default_storage_url(workspace: Path) -> str:
    """The SQLite file ``automl run`` creates in ``workspace``."""
    return f"sqlite:///{(Path(workspace) / 'study.db').resolve()}"


def storage_from_env(explicit: str | None) -> str | None:
    """``explicit`` (a flag), else ``$AUTOML_STORAGE``, else None (the workspace default)."""
    return explicit or os.environ.get(STORAGE_ENV) or None


def resolve_storage_url(explicit: str | None, workspace: Path) -> str:
    """The storage URL to open: ``explicit``, else the workspace's SQLite file."""
    return explicit or default_storage_url(workspace)


def redact_url(text: str) -> str:
    """``text`` (a URL, or a line holding URLs) with every password replaced by ``***``."""
    try:
        url = make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        url = None
    if url is not None and url.password is not None:
        return url.render_as_string(hide_password=True)
    return _URL_WITH_PASSWORD.sub(lambda m: f"{m['head']}***@", str(text))


def existing_storage_url(storage: str | None, workspace: Path) -> str:
    """The storage of a study that must exist already (status, report, dashboard).

    A missing SQLite file is refused rather than silently created, so a mistyped
    ``--workspace`` is reported instead of showing an empty study list.
    """
    explicit = storage_from_env(storage)
    url = resolve_storage_url(explicit, workspace)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise UserError(
            f"--storage {redact_url(url)!r} is not a database URL: use e.g. "
            "sqlite:///automl_workspace/study.db or postgresql://user:pass@host:5432/optuna"
        ) from exc
    if parsed.drivername.startswith("sqlite"):
        db = parsed.database
        if not db or db == ":memory:":
            raise UserError(
                f"--storage {url!r} is an in-memory SQLite database, which no other process "
                "can read: point it at the study's file, e.g. sqlite:///<workspace>/study.db"
            )
        if not Path(db).is_file():
            hint = "pass --storage" if explicit else "pass --workspace or --storage"
            raise UserError(
                f"no study database at {Path(db).resolve()}: `automl run` creates it when a "
                f"study starts; {hint} to point at an existing one"
            )
    return url


def storage_error(url: str, exc: Exception) -> UserError:
    """A storage that cannot be opened, said without its password."""
    reason = getattr(exc, "orig", None) or exc
    return UserError(
        f"cannot open the study storage {redact_url(url)}: {redact_url(str(reason))}. Check the URL, that "
        "the database server is up, and the credentials"
    )
