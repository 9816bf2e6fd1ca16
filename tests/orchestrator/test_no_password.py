"""No command prints the storage URL's password: not `automl run`, `status`, `best`,
`report` or `dashboard`, not their errors, not the report, not the nightly log."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from automl.config.storage import redact_url
from automl.study.cron import CronSchedule
from automl.study.schedule import Scheduler, ScheduleState
from automl.ui.nightly import schedule_line

from orchestrator_utils import scripted_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pw0rd"
UNREACHABLE = f"postgresql+psycopg2://automl:{SECRET}@127.0.0.1:9/automl"  # nothing listens on port 9


def _automl(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "automl", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.2", **(env or {})})


def test_redaction_of_urls_and_lines():
    assert redact_url(UNREACHABLE) == "postgresql+psycopg2://automl:***@127.0.0.1:9/automl"
    assert redact_url(f"run --storage {UNREACHABLE} --n-trials 2") == (
        "run --storage postgresql+psycopg2://automl:***@127.0.0.1:9/automl --n-trials 2")
    assert redact_url("sqlite:////tmp/ws/study.db") == "sqlite:////tmp/ws/study.db"
    assert redact_url("postgresql://automl@db/automl") == "postgresql://automl@db/automl"


@pytest.mark.parametrize("command", [
    ["status", "--storage", UNREACHABLE],
    ["best", "--storage", UNREACHABLE],
    ["report", "--storage", UNREACHABLE],
    ["dashboard", "--storage", UNREACHABLE, "--port", "0"],
    ["status"],  # from $AUTOML_STORAGE
])
def test_an_unreachable_storage_is_named_without_its_password(command):
    proc = _automl(*command, env={"AUTOML_STORAGE": UNREACHABLE})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert SECRET not in out
    assert "cannot open the study storage postgresql+psycopg2://automl:***@127.0.0.1:9/automl" in out


def test_automl_run_on_an_unreachable_storage(tmp_path, coco_dirs):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(scripted_config(tmp_path, coco_dirs)))
    proc = _automl("run", "--config", str(config), "--storage", UNREACHABLE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert SECRET not in out and "automl:***@" in out


def test_the_scheduler_log_hides_the_password(tmp_path):
    """The scheduler's lines (what the compose service logs) for a run whose arguments
    carry a storage URL with a password: a real child (`automl --help`)."""

    class Clock:  # one minute before the slot; sleeping moves time on
        t = dt.datetime(2026, 11, 25, 1, 59, tzinfo=dt.UTC)

        def now(self):
            return self.t

        def sleep(self, seconds):
            self.t += dt.timedelta(seconds=seconds)

    events: list = []
    sched = Scheduler(CronSchedule.parse("0 2 * * *", "UTC"), ["--help", "--storage", UNREACHABLE],
                      ScheduleState(tmp_path / "state.json"), tmp_path / "run.lock", clock=Clock(),
                      emit=events.append)
    assert sched.run_forever(max_runs=1) == [0]
    lines = [schedule_line(e) for e in events]
    assert lines and not any(SECRET in line for line in lines)
    assert any("automl:***@" in line for line in lines)


@pytest.mark.postgres
def test_a_whole_study_on_postgresql_with_a_password(tmp_path, coco_dirs, pg_url):
    """The server trusts local connections, so the password is carried and ignored:
    every command works and none shows it."""
    url = pg_url.replace("postgres@", f"postgres:{SECRET}@")
    raw = scripted_config(tmp_path, coco_dirs, budget={"n_trials": 2},
                          fixed={"train.num_epochs": 2, "dataset.batch_size": 2})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = str(tmp_path / "ws")
    runs = [
        _automl("run", "--config", str(config), "--storage", url),
        _automl("status", "--storage", url),
        _automl("best", "--storage", url, "--json"),
        _automl("report", "--storage", url, "--workspace", workspace),
        _automl("status", "--storage", url, "--study", "no-such-study"),
    ]
    assert [p.returncode for p in runs] == [0, 0, 0, 0, 2], [p.stdout + p.stderr for p in runs]
    for proc in runs:
        assert SECRET not in proc.stdout + proc.stderr
    assert "postgres:***@" in runs[-1].stderr
    report = tmp_path / "ws" / "scripted" / "report" / "report.html"
    assert "postgres:***@" in report.read_text() and SECRET not in report.read_text()
