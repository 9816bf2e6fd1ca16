"""Results belong to the person who ran the study: the container runs as the invoking
user's uid:gid (never root), and root's own runs hand the folder to an unprivileged uid."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from automl.launchers.docker import UNPRIVILEGED_USER, DockerLauncher

from docker_test_utils import job, job_output

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SITE = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
WRITE = "id -u; mkdir -p train && echo '{}' > train/status.json"

_AS_USER = """
import sys
from pathlib import Path
from automl.launchers.base import JobSpec
from automl.launchers.docker import DockerLauncher
results = Path(sys.argv[2])
job = JobSpec("%s", 0, ("sh", "-c", sys.argv[3]), results, results / "stdout.log")
sys.exit(DockerLauncher(image=sys.argv[1]).launch(job).wait(60).exit_code)
"""


def python_for(uid: int) -> list[str]:
    """An interpreter another user may run (the venv's own may sit under root's home),
    with this project and the venv's packages on its path."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if _usable_by(candidate, uid):
            return [candidate]
    pytest.skip(f"no Python interpreter that uid {uid} may run")


def _usable_by(path: str, uid: int) -> bool:
    try:
        return subprocess.run([path, "-c", "import sys; assert sys.version_info[:2] == (3, 11)"],
                              user=uid, capture_output=True).returncode == 0
    except OSError:
        return False


def owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user (non-root: see the next test)")
def test_a_non_root_invoker_owns_the_results(launcher, study):
    uid = gid = 4242
    root = Path(tempfile.mkdtemp(prefix="automl-owner-"))
    try:
        root.chmod(0o755)
        os.chown(root, uid, gid)
        results = root / "trial_0"
        proc = subprocess.run(
            [*python_for(uid), "-c", _AS_USER % study, launcher.image, str(results), WRITE],
            user=uid, group=gid, extra_groups=[grp.getgrnam("docker").gr_gid],
            env={**os.environ, "HOME": str(root), "PYTHONPATH": os.pathsep.join([str(REPO), SITE])},
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr + job_output(results / "stdout.log")
        assert job_output(results / "stdout.log").split()[0] == str(uid)
        assert owner(results / "train" / "status.json") == (uid, gid)
        assert owner(results / "train") == (uid, gid)
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.skipif(os.getuid() == 0, reason="runs as a non-root invoker; as root the test above covers it")
def test_results_belong_to_the_invoking_user(launcher, study, tmp_path):
    spec = job(study, 0, WRITE, tmp_path)
    assert launcher.launch(spec).wait(60).exit_code == 0
    assert owner(spec.results_dir / "train" / "status.json") == (os.getuid(), os.getgid())


@pytest.mark.skipif(os.getuid() != 0, reason="root's own runs only")
def test_root_runs_the_container_as_the_folder_owner_or_an_unprivileged_user(launcher, study, tmp_path):
    owned = tmp_path / "alice"
    owned.mkdir()
    os.chown(owned, 4343, 4343)
    spec = job(study, 0, WRITE, owned)  # results dir created inside alice's folder
    assert launcher.launch(spec).wait(60).exit_code == 0
    assert owner(spec.results_dir / "train" / "status.json") == (4343, 4343)

    spec = job(study, 2, WRITE, owned / "study")  # folders root made there first (spec.yaml)
    spec.results_dir.mkdir(parents=True)
    (spec.results_dir / "spec.yaml").write_text("x: 1\n")
    assert launcher.launch(spec).wait(60).exit_code == 0
    assert owner(spec.results_dir / "train" / "status.json") == (4343, 4343)
    assert owner(spec.results_dir) == (4343, 4343)

    spec = job(study, 1, WRITE, tmp_path)  # root's own folder
    spec.results_dir.mkdir()
    (spec.results_dir / "spec.yaml").write_text("x: 1\n")  # written by root before the launch
    assert launcher.launch(spec).wait(60).exit_code == 0
    uid, gid = (int(x) for x in UNPRIVILEGED_USER.split(":"))
    assert job_output(spec.log_path).split()[0] == str(uid)
    assert owner(spec.results_dir / "train" / "status.json") == (uid, gid)
    assert owner(spec.results_dir) == (uid, gid)


def test_user_option_overrides(launcher, docker_client, study, tmp_path):
    spec = job(study, 0, "id -u", tmp_path)
    DockerLauncher(image=launcher.image, user="", client=docker_client).launch(spec).wait(60)
    assert job_output(spec.log_path).split() == ["1000"]  # the image's own non-root user
    spec = job(study, 1, "id -u", tmp_path)
    DockerLauncher(image=launcher.image, user="2345:2345", client=docker_client).launch(spec).wait(60)
    assert job_output(spec.log_path).split() == ["2345"]
