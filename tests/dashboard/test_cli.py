"""``automl dashboard`` and ``automl report`` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from automl.cli import main
from automl.config.storage import default_storage_url, existing_storage_url
from automl.errors import UserError


def test_report_defaults_to_the_only_study(study_fixture, capsys, monkeypatch):
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    ws = study_fixture.workspace
    assert main(["report", "--workspace", str(ws)]) == 0
    html = ws / study_fixture.study_name / "report" / "report.html"
    assert f"report of study '{study_fixture.study_name}': {html}" in capsys.readouterr().out
    assert "CUDA out of memory at epoch 1" in html.read_text()


def test_report_with_several_studies_lists_them(study_fixture, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    optuna.create_study(study_name="another", storage=study_fixture.storage_url)
    argv = ["report", "--storage", study_fixture.storage_url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "2 studies in" in err and "another, dino-smoke-test" in err and "--study" in err
    out = tmp_path / "out"
    assert main([*argv, "--study", "dino-smoke-test", "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "epoch_curves.png").is_file()


def test_missing_database_is_refused_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    ws = tmp_path / "typo"
    assert main(["report", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert f"no study database at {ws.resolve() / 'study.db'}" in err and "--workspace" in err
    assert main(["dashboard", "--workspace", str(ws), "--port", "0"]) == 2
    assert not ws.exists()
    with pytest.raises(UserError, match="not a database URL"):
        existing_storage_url("study.db", ws)
    with pytest.raises(UserError, match="in-memory SQLite"):
        existing_storage_url("sqlite://", ws)


def test_storage_comes_from_environment(study_fixture, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_STORAGE", study_fixture.storage_url)
    assert existing_storage_url(None, tmp_path) == study_fixture.storage_url
    assert existing_storage_url(None, tmp_path / "ignored") == study_fixture.storage_url
    monkeypatch.delenv("AUTOML_STORAGE")
    assert existing_storage_url(None, study_fixture.workspace) == default_storage_url(
        study_fixture.workspace
    )
    assert default_storage_url(Path("ws")) == f"sqlite:///{Path('ws').resolve() / 'study.db'}"


def test_dashboard_command_serves_until_interrupted(study_fixture):
    """The real console entry in a subprocess: prints its URL, serves the API, stops on Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "AUTOML_STORAGE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "automl", "dashboard", "--workspace", str(study_fixture.workspace),
         "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("optuna-dashboard: http://127.0.0.1:"), line
        base = line.split()[1].removesuffix("/dashboard")
        with urllib.request.urlopen(base + "/api/studies", timeout=20) as resp:
            studies = json.load(resp)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dino-smoke-test"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "dashboard stopped" in out


def test_dashboard_refuses_implicit_non_loopback(study_fixture):
    from automl.ui.dashboard import DashboardServer

    with pytest.raises(UserError, match="refusing to serve the dashboard on '0.0.0.0'"):
        DashboardServer(study_fixture.storage_url, host="0.0.0.0", port=0)
    with pytest.raises(UserError, match="port 70000 is out of range"):
        DashboardServer(study_fixture.storage_url, port=70000)
