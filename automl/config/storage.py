"""Where a study lives: the storage URL and the workspace, resolved in one place.

Every command picks the storage the same way (``--storage``, else ``$AUTOML_STORAGE``,
else ``sqlite:///<workspace>/study.db``), parses it once (:func:`parse_storage_url`) and
shows it only through :func:`redact_url`: a PostgreSQL URL carries a password, and
command output lands in CI logs and reports.

``postgresql://`` without a driver (the form most documentation shows) means whichever
PostgreSQL driver is installed: psycopg 3 (SQLAlchemy 2.1's default) if present, else
psycopg2, which this package installs. ``postgres://`` (libpq's and Heroku's spelling) is
read as ``postgresql://``. A URL naming a driver that is not installed, an unknown
database kind or an async driver is refused when the config is read, with what to do.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import tempfile
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from automl.errors import ConfigError, UserError

DEFAULT_WORKSPACE = Path("automl_workspace")
STORAGE_ENV = "AUTOML_STORAGE"
_URL_WITH_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@")
_EXAMPLES = "sqlite:///automl_workspace/study.db or postgresql://user:password@host:5432/optuna"
# PostgreSQL drivers for a URL that names none, in SQLAlchemy 2.1's order of preference
_POSTGRES_DRIVERS = ("psycopg", "psycopg2")
# pip names of the usual drivers' import names, for the install hint
_PIP_NAMES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
              "MySQLdb": "mysqlclient", "mysql": "mysql-connector-python", "pg8000": "pg8000"}


def default_storage_url(workspace: Path) -> str:
    """The SQLite file ``automl run`` creates in ``workspace``."""
    return f"sqlite:///{(Path(workspace) / 'study.db').resolve()}"


def storage_from_env(explicit: str | None) -> str | None:
    """``explicit`` (a flag), else ``$AUTOML_STORAGE``, else None (the workspace default)."""
    return explicit or os.environ.get(STORAGE_ENV) or None


def resolve_storage_url(explicit: str | None, workspace: Path) -> str:
    """The storage URL to open: ``explicit`` (parsed), else the workspace's SQLite file."""
    return parse_storage_url(explicit) if explicit else default_storage_url(workspace)


def parse_storage_url(text: str, where: str = "the storage URL") -> str:
    """``text`` as the URL Optuna's RDB storage will open, with a driver that is installed.

    Raises :class:`ConfigError` (``where`` names the flag or key) for text that is not a
    URL, an unknown database kind, a driver that is not installed or an async driver.
    """
    shown = redact_url(text)
    try:
        url = make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(f"{where} {shown!r} is not a database URL: use e.g. {_EXAMPLES}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":  # libpq's spelling, which SQLAlchemy no longer reads
        backend = "postgresql"
    if backend == "postgresql" and not driver:
        driver = next((d for d in _POSTGRES_DRIVERS if importlib.util.find_spec(d) is not None), "")
        if not driver:
            raise ConfigError(f"{where} {shown!r} needs a PostgreSQL driver and none is installed: "
                              "pip install psycopg2-binary (a dependency of dino-automl: reinstall it)")
    parsed: URL = url.set(drivername=f"{backend}+{driver}" if driver else backend)
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(f"{where} {shown!r}: unknown database kind {parsed.drivername!r}; Optuna stores "
                          f"studies in SQLite, PostgreSQL or MySQL, e.g. {_EXAMPLES}") from None
    if getattr(dialect, "is_async", False):
        example = ", e.g. postgresql+psycopg2://..." if backend == "postgresql" else ""
        raise ConfigError(f"{where} {shown!r}: {parsed.drivername} is an asyncio driver, which Optuna cannot "
                          f"use; name a synchronous one{example}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _PIP_NAMES.get(module, module or "the driver's package")
        raise ConfigError(f"{where} {shown!r} uses the driver {parsed.drivername}, which is not installed "
                          f"({exc}): pip install {package}, or name an installed driver"
                          + (", e.g. postgresql+psycopg2://..." if backend == "postgresql" else "")) from None
    if parsed.drivername == url.drivername:
        return text  # as written (rendering would re-quote a password)
    return parsed.render_as_string(hide_password=False)


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
    url = parse_storage_url(explicit, storage_source(storage)) if explicit else default_storage_url(workspace)
    parsed = make_url(url)
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


def storage_source(flag: str | None) -> str:
    """Where the storage URL came from, for messages: the flag or the environment."""
    return "--storage" if flag else f"${STORAGE_ENV}"


def storage_error(url: str, exc: Exception) -> UserError:
    """A storage that cannot be opened: one line, without the password, with the likely fix."""
    reason = redact_url(" ".join(str(getattr(exc, "orig", None) or exc).split()))
    return UserError(f"cannot open the study storage {redact_url(url)}: {reason.rstrip('. ')}; {_storage_fix(url, reason)}")


def _storage_fix(url: str, reason: str) -> str:
    low = reason.lower()
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return f"check the URL (e.g. {_EXAMPLES})"
    if parsed.drivername.startswith("sqlite"):
        folder = Path(parsed.database or ".").resolve().parent
        if "unable to open database file" in low:
            return f"the SQLite file's folder {folder} must exist and be writable (create it, or point --storage elsewhere)"
        if "readonly" in low or "read-only" in low:
            return f"the SQLite file and its folder {folder} must be writable"
        return "check that the file is an SQLite database of an automl study"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
    if any(s in low for s in ("password authentication failed", "no password supplied", "access denied",
                              "authentication failed")) or ("role" in low and "does not exist" in low):
        return "check the user name and password in the URL"
    if "database" in low and ("does not exist" in low or "unknown database" in low):
        return f"create the database {parsed.database!r} on {where} first, or fix its name in the URL"
    if any(s in low for s in ("connection refused", "could not connect", "timeout", "timed out",
                              "could not translate host name", "name or service not known", "no route to host",
                              "network is unreachable", "server closed the connection")):
        return f"start the database server or fix the host and port in the URL (it named {where})"
    return "check the URL, that the database server is up, and the credentials"


def prepare_workspace(workspace: Path, where: str = "workspace") -> Path:
    """Create ``workspace`` and prove it writable (a probe file), before anything is staged.

    Raises :class:`UserError` naming the folder, why and what to do (``where``: the flag
    or key that set it).
    """
    path = Path(workspace)
    if path.exists() and not path.is_dir():
        raise UserError(f"{where} {path} is a file, not a folder: pass --workspace DIR (or set workspace: "
                        "in the config) to a folder, or move that file away")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".automl-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOTDIR:
            why = "a part of the path is a file"
        at = Path(exc.filename) if exc.filename else path
        blocked = "" if path in (at, at.parent) else f" (at {at})"  # the probe file is not worth naming
        raise UserError(f"{where} {path} cannot be written: {why}{blocked}; pass --workspace DIR (or set "
                        "workspace: in the config) to a folder you can write, or fix its permissions") from None
    return path
