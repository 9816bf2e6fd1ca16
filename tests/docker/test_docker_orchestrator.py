"""The orchestrator image as docker-compose runs it: the Docker socket mounted, the
workspace at its host path; trial containers are its siblings and write to the host."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from docker_test_utils import job_output

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = "dino-automl/orchestrator:pytest"

_LAUNCH = """
import sys
from pathlib import Path
from automl.launchers.base import JobSpec
from automl.launchers.docker import DockerLauncher
results = Path(sys.argv[1])
job = JobSpec(sys.argv[2], 0, ("sh", "-c", "echo trial says hi; echo done > out.txt; exit 3"), results, results / "stdout.log")
result = DockerLauncher(image=sys.argv[3]).launch(job).wait(60)
print("exit", result.exit_code)
"""


@pytest.fixture(scope="module")
def orchestrator_image(docker_client, launcher):
    subprocess.run(
        ["docker", "build", "-q", "-f", "docker/orchestrator.Dockerfile", "--build-arg", f"TRAINER_IMAGE={launcher.image}",
         "-t", ORCHESTRATOR, "."],
        cwd=REPO, check=True, capture_output=True, timeout=600,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    yield ORCHESTRATOR
    docker_client.images.remove(ORCHESTRATOR, force=True)


def test_a_containerized_orchestrator_runs_trials_as_sibling_containers(docker_client, launcher, orchestrator_image, study):
    workspace = Path(tempfile.mkdtemp(prefix="automl-ws-"))
    try:
        results = workspace / study / "trial_0000"
        out = docker_client.containers.run(
            orchestrator_image, ["python", "-c", _LAUNCH, str(results), study, launcher.image],
            volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                     str(workspace): {"bind": str(workspace), "mode": "rw"}},
            network_mode="none", remove=True, stdout=True, stderr=True,
        ).decode()
        assert out.strip().endswith("exit 3"), out
        assert "trial says hi" in job_output(results / "stdout.log")
        assert (results / "out.txt").read_text() == "done\n"
        assert (results / "out.txt").stat().st_uid != 0  # the trial ran unprivileged
    finally:
        subprocess.run(["rm", "-rf", str(workspace)], check=False)
