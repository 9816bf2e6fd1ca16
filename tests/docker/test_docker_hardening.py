"""A trial's container is locked down: seen by ``docker inspect`` on the RUNNING container
and from inside it. Non-root, no network, data read-only (as before) and also every
capability dropped, no-new-privileges, a read-only root filesystem with a tmpfs for
scratch (``/tmp``, which is ``HOME``). Each lock can be turned off by a launcher option."""

from __future__ import annotations

import re

import pytest

from automl.launchers import LAUNCHERS

from docker_test_utils import job, job_output, wait_until

pytestmark = pytest.mark.docker

# what the job reports about itself, then it waits to be inspected
PROBE = (
    "touch /rootfs-probe 2>/dev/null && echo ROOT-WRITABLE || echo root-read-only; "
    "echo scratch > /tmp/probe && echo tmp-writable; "
    'echo "home=$HOME"; touch "$HOME/.probe" && echo home-writable; '
    "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; "
    "echo uid=$(id -u); "
    "awk '$2 == \"/\" {{print \"rootfs=\" $4}}' /proc/mounts; "
    "touch {data}/new 2>/dev/null && echo DATA-WRITABLE; "
    "echo probed; exec sleep 120"
)


def _launch_probe(launcher, study, tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "annotations.json").write_text("{}")
    data.chmod(0o755)
    spec = job(study, 0, PROBE.format(data=data), tmp_path, read_only_paths=(data,))
    handle = launcher.launch(spec)
    wait_until(lambda: "probed" in job_output(spec.log_path), 60, "the probe to report")
    return spec, handle, data


def _status(log: str) -> dict[str, str]:
    return dict(re.findall(r"^(CapEff|CapBnd|NoNewPrivs):\s+(\S+)$", log, re.M))


def test_a_running_trial_container_is_locked_down(launcher, docker_client, study, tmp_path):
    spec, handle, data = _launch_probe(launcher, study, tmp_path)
    try:
        attrs = docker_client.containers.get(handle.id).attrs
        assert attrs["State"]["Status"] == "running"
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert any(opt.startswith("no-new-privileges") and not opt.endswith("false") for opt in host["SecurityOpt"])
        assert host["ReadonlyRootfs"] is True
        assert set(host["Tmpfs"]) == {"/tmp"} and "exec" in host["Tmpfs"]["/tmp"].split(",")
        assert host["NetworkMode"] == "none"
        user = attrs["Config"]["User"]
        assert user and user.split(":")[0] not in ("0", "root")
        mounts = {m["Destination"]: m for m in attrs["Mounts"]}
        assert mounts[str(data)]["RW"] is False and mounts[str(spec.results_dir)]["RW"] is True

        log = job_output(spec.log_path)  # the same, seen from inside
        assert "root-read-only" in log and "ROOT-WRITABLE" not in log
        assert re.search(r"^rootfs=ro(,|$)", log, re.M), log
        assert "tmp-writable" in log and "home=/tmp" in log and "home-writable" in log
        assert _status(log) == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}, log
        assert f"uid={user.split(':')[0]}" in log
        assert "DATA-WRITABLE" not in log and not (data / "new").exists()
    finally:
        handle.stop(grace_period=0)


def test_each_lock_can_be_turned_off_by_a_launcher_option(launcher, docker_client, study, tmp_path):
    """As ``launcher: {name: docker, options: {...}}`` builds it, for an image that needs it."""
    options = {"image": launcher.image, "shm_size": "64m", "drop_capabilities": False, "no_new_privileges": False,
               "read_only_root": False}
    loose = LAUNCHERS.build("docker", options, client=docker_client)
    spec, handle, _ = _launch_probe(loose, study, tmp_path)
    try:
        host = docker_client.containers.get(handle.id).attrs["HostConfig"]
        assert not host.get("CapDrop") and not host.get("SecurityOpt")
        assert host["ReadonlyRootfs"] is False and not host.get("Tmpfs")
        assert host["NetworkMode"] == "none"  # not an option: trials never get a network
        log = job_output(spec.log_path)
        assert re.search(r"^rootfs=rw(,|$)", log, re.M), log  # (writing there still needs the image's owner)
        assert _status(log)["NoNewPrivs"] == "0"
    finally:
        handle.stop(grace_period=0)


def test_the_scratch_tmpfs_takes_a_size(launcher, docker_client, study, tmp_path):
    sized = LAUNCHERS.build("docker", {"image": launcher.image, "scratch_size": "24m"}, client=docker_client)
    spec = job(study, 0, "df -m /tmp | tail -1", tmp_path)
    assert sized.launch(spec).wait(60).exit_code == 0
    size_mb = int(job_output(spec.log_path).split()[1])
    assert 20 <= size_mb <= 28
