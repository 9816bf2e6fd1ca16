"""A real Docker engine and trainer image for the launcher tests.

The session fixture runs ``.ci/docker.sh`` (installs and starts dockerd if needed,
rebuilds the trainer image when the sources changed). Tests skip only when no Docker
engine can be had at all; a failed image build is an error, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest

from automl.launchers.docker import LABEL_STUDY, DockerLauncher

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("AUTOML_TRAINER_IMAGE", "dino-automl/trainer:latest")
STUDY_PREFIX = "pytest-docker-"


def _engine() -> docker.DockerClient | None:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException:
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first Docker test also waits for ``.ci/docker.sh`` (an image build may take up to
    1500 s) or builds an image of its own: longer than the suite's 600 s per test."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(2400))


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        setup = subprocess.run(
            [str(REPO / ".ci" / "docker.sh")], capture_output=True, text=True, timeout=1500,
            env={**os.environ, "AUTOML_TRAINER_IMAGE": IMAGE},
        )
        output, code = setup.stdout + setup.stderr, setup.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"{exc.stdout or ''}{exc.stderr or ''}", -1
    client = _engine()
    if client is None:
        pytest.skip(f"no Docker engine could be started (.ci/docker.sh exit {code}):\n{output[-2000:]}")
    if code != 0:
        pytest.fail(f".ci/docker.sh failed (exit {code}) although dockerd answers:\n{output[-4000:]}")
    yield client
    _remove_test_containers(client)  # whatever a failed test left behind
    client.close()


def _remove_test_containers(client: docker.DockerClient, study: str | None = None) -> None:
    for container in client.containers.list(all=True, filters={"label": LABEL_STUDY}):
        name = container.labels.get(LABEL_STUDY, "")
        if (study is None and name.startswith(STUDY_PREFIX)) or name == study:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture(scope="session")
def launcher(docker_client) -> DockerLauncher:
    return DockerLauncher(image=IMAGE, shm_size="256m", client=docker_client)


@pytest.fixture
def study(docker_client) -> str:
    """A study name of this test only; its containers are removed afterwards."""
    name = f"{STUDY_PREFIX}{uuid.uuid4().hex[:8]}"
    yield name
    _remove_test_containers(docker_client, name)
