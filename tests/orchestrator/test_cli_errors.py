"""Errors a user can cause at the ``automl`` command line: one ``error:`` line saying what
to do, exit code 2, no traceback (``--debug`` shows it). The storage URL forms people
type (``postgresql://``, ``postgres://``) work with the driver this package installs.

Real processes throughout: ``python -m automl`` against the real PostgreSQL server, an
address where nothing listens, and folders the CLI cannot write.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from automl.cli import as_user_error
from automl.config import build_run_config
from automl.config.storage import parse_storage_url, prepare_workspace
from automl.errors import ConfigError, UserError

from orchestrator_utils import scripted_config

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://automl:pw@127.0.0.1:9/automl"  # nothing listens on port 9
PSYCOPG3 = importlib.util.find_spec("psycopg") is not None


def _automl(*args: str, env: dict | None = None, user: int | None = None) -> subprocess.CompletedProcess:
    """``python -m automl ...``; ``user``: run it as that uid (root tests an unwritable folder so)."""
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    full_env = {k: v for k, v in os.environ.items() if k != "AUTOML_STORAGE"}  # only what a test sets
    full_env.update(SCRIPTED_EPOCH_SECONDS="0.1", **(env or {}))
    return subprocess.run([*prefix, sys.executable, "-m", "automl", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env=full_env)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and exactly one ``error:`` line on stderr, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def run_config(tmp_path, coco_dirs) -> Path:
    config = tmp_path / "run.yaml"
    cfg = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 1}, export={"enabled": False},
                          fixed={"train.num_epochs": 1, "dataset.batch_size": 2})
    config.write_text(yaml.safe_dump(cfg))
    return config


# -- the URL forms, parsed once --------------------------------------------------------

@pytest.mark.skipif(PSYCOPG3, reason="psycopg 3 is installed: SQLAlchemy's own default driver applies")
@pytest.mark.parametrize("typed, opened", [
    ("postgresql://automl:p%40ss@db:5432/optuna", "postgresql+psycopg2://automl:p%40ss@db:5432/optuna"),
    ("postgres://automl@db/optuna", "postgresql+psycopg2://automl@db/optuna"),
    ("postgresql+psycopg2://automl@db/optuna", "postgresql+psycopg2://automl@db/optuna"),
    ("sqlite:////srv/automl/study.db", "sqlite:////srv/automl/study.db"),
])
def test_the_usual_url_forms_open_with_the_installed_driver(typed, opened):
    assert parse_storage_url(typed) == opened


@pytest.mark.parametrize("url, message", [
    ("study.db", "is not a database URL: use e.g. sqlite:///"),
    ("foo://u@h/db", "unknown database kind 'foo'"),
    ("mysql://u:secret@h/db", "uses the driver mysql, which is not installed (No module named 'MySQLdb'): pip install mysqlclient"),
    ("postgresql+asyncpg://u@h/db", "asyncio driver, which Optuna cannot use; name a synchronous one, e.g. postgresql+psycopg2"),
])
def test_a_bad_url_is_refused_when_the_config_is_read(url, message, tmp_path, coco_dirs):
    with pytest.raises(ConfigError, match="--storage") as info:
        parse_storage_url(url, "--storage")
    assert message in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"study\.storage"):  # the same rule for a config file's value
        build_run_config(scripted_config(tmp_path, coco_dirs, study={"name": "s", "storage": url}),
                         use_cpu_variant=False, where="run.yaml")


@pytest.mark.parametrize("url", ["not-a-url", "mysql://u:secret@h/db", "postgresql+asyncpg://u@h/db"])
def test_a_bad_storage_flag_fails_before_staging_in_one_line(url, run_config, tmp_path):
    proc = _automl("run", "--config", str(run_config), "--storage", url)
    line = _one_error_line(proc)
    assert line.startswith("error: --storage ") and "secret" not in line
    assert proc.stdout == "" and not (tmp_path / "ws").exists()  # nothing staged, no workspace made


@pytest.mark.postgres
def test_the_documented_postgresql_url_runs_a_study(pg_url, run_config):
    """``postgresql://`` as the help text shows it, on the real server."""
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    assert plain.startswith("postgresql://") and "+" not in plain.split("://")[0]
    proc = _automl("run", "--config", str(run_config), "--storage", plain)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = _automl("status", "--storage", plain)
    assert status.returncode == 0, status.stderr
    assert "complete: 1" in status.stdout
    env_status = _automl("status", env={"AUTOML_STORAGE": pg_url.replace("postgresql+psycopg2://", "postgres://")})
    assert env_status.returncode == 0 and "complete: 1" in env_status.stdout, env_status.stderr


# -- servers and folders that refuse ------------------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["best"], ["report"], ["run", "--config", "{config}"]])
def test_an_unreachable_database_is_one_line_with_the_fix(command, run_config):
    args = [a.replace("{config}", str(run_config)) for a in command]
    line = _one_error_line(_automl(*args, "--storage", UNREACHABLE))
    assert "cannot open the study storage postgresql+psycopg2://automl:***@127.0.0.1:9/automl" in line
    assert "Connection refused" in line and "start the database server or fix the host and port" in line


@pytest.mark.postgres
def test_a_database_that_does_not_exist_says_to_create_it(pg_url):
    missing = pg_url.rsplit("/", 1)[0] + "/automl_no_such_db"
    line = _one_error_line(_automl("status", "--storage", missing))
    assert 'database "automl_no_such_db" does not exist' in line and "create the database" in line


def test_a_workspace_under_a_file_is_one_line(run_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_error_line(_automl("run", "--config", str(run_config), "--workspace", str(blocker / "ws")))
    assert f"--workspace {blocker / 'ws'} cannot be written: a part of the path is a file" in line
    line = _one_error_line(_automl("run", "--config", str(run_config), "--workspace", str(blocker)))
    assert f"--workspace {blocker} is a file, not a folder" in line


def test_a_read_only_workspace_is_one_line_before_staging(coco_dirs):
    """A folder the user cannot write (as root: the same CLI run as an unprivileged user)."""
    user = None
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot drop to an unprivileged user")
        user = 65534  # nobody
    base = Path(tempfile.mkdtemp(prefix="automl-ro-"))  # world-readable, unlike pytest's tmp_path
    try:
        base.chmod(0o755)
        config = base / "run.yaml"
        config.write_text(yaml.safe_dump(scripted_config(base, coco_dirs)))
        config.chmod(0o644)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        proc = _automl("run", "--config", str(config), "--workspace", str(locked / "ws"), user=user)
        line = _one_error_line(proc)
        assert f"--workspace {locked / 'ws'} cannot be written: Permission denied" in line
        assert "a folder you can write" in line and proc.stdout == ""
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_debug_shows_the_traceback_of_a_user_error(run_config):
    for proc in (_automl("--debug", "run", "--config", str(run_config), "--storage", "not-a-url"),
                 _automl("run", "--config", str(run_config), "--storage", "not-a-url", env={"AUTOML_DEBUG": "1"})):
        assert proc.returncode == 2
        assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("error: --storage 'not-a-url'")


def test_what_counts_as_a_users_error():
    denied = as_user_error(PermissionError(errno.EACCES, "Permission denied", "/srv/ws/study.db"))
    assert isinstance(denied, UserError) and str(denied).startswith("Permission denied: /srv/ws/study.db")
    assert as_user_error(OSError(errno.ENOSPC, "No space left on device")) is not None
    assert as_user_error(RuntimeError("a bug")) is None  # keeps its traceback
    assert as_user_error(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_prepare_workspace_creates_and_checks(tmp_path):
    ws = prepare_workspace(tmp_path / "a" / "b")
    assert ws.is_dir() and list(ws.iterdir()) == []  # the probe file is gone
