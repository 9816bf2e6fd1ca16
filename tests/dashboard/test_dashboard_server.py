"""DashboardServer over HTTP (no browser): API, artifacts, shutdown."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import optuna
import pytest

from automl.errors import UserError
from automl.ui.dashboard import DashboardServer, is_loopback


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as resp:
        return resp.read()


def test_serves_study_and_trial_artifacts(study_fixture, dashboard):
    base = f"http://127.0.0.1:{dashboard.port}"
    assert dashboard.url == base + "/dashboard"
    assert b"<html" in _get(dashboard.url).lower()
    (summary,) = json.loads(_get(base + "/api/studies"))["study_summaries"]
    assert summary["study_name"] == "dino-smoke-test"
    study_id = summary["study_id"]
    detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
    states = [t["state"] for t in detail["trials"]]
    assert states == ["Complete", "Complete", "Pruned", "Complete", "Fail", "Running"]
    pruned = detail["trials"][2]
    assert [v["value"] for v in pruned["intermediate_values"]] == [0.01, 0.03, 0.04]
    # the spec artifact of trial 2, served as text under the dashboard's artifact route
    study = optuna.load_study(study_name="dino-smoke-test", storage=study_fixture.storage_url)
    trial = study.trials[2]
    artifact_id = study_fixture.spec_artifact_ids[2]
    url = f"{base}/artifacts/{study_id}/{trial._trial_id}/{artifact_id}"
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.headers["Content-Type"] == "text/plain"
        assert resp.read().decode() == open(trial.user_attrs["spec_path"]).read()


def test_stop_releases_the_port(study_fixture):
    server = DashboardServer(study_fixture.storage_url, port=0).start()
    port = server.port
    with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is already in use"):
        DashboardServer(study_fixture.storage_url, port=port)
    server.stop()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/api/studies")
    with socket.socket() as s:  # free again
        s.bind(("127.0.0.1", port))


def test_stop_without_start_does_not_hang(study_fixture):
    DashboardServer(study_fixture.storage_url, port=0).stop()


@pytest.mark.parametrize(
    "host,loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("192.168.1.4", False), ("::", False), ("example.org", False)],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
