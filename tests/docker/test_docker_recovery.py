"""After a worker dies (SIGKILL), its containers live on: reap_orphans finds them by label
and removes those no live worker owns; attach picks one up again, running or finished."""

from __future__ import annotations

import signal
import time

import docker.errors
import pytest

from automl.launchers.docker import LABEL_STUDY, LABEL_TRIAL

from docker_test_utils import job, job_output, start_worker, wait_until

pytestmark = pytest.mark.docker

FOREVER = "echo up; exec sleep 300"


def kill_worker(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def status(client, container_id: str) -> str:
    try:
        return client.containers.get(container_id).status
    except docker.errors.NotFound:
        return "gone"


def test_reap_orphans_removes_the_dead_workers_containers_of_this_study_only(
    launcher, docker_client, study, tmp_path
):
    other_study = f"{study}-other"
    jobs = [job(study, n, FOREVER, tmp_path) for n in (0, 1, 2)]
    jobs.append(job(study, 3, "exit 0", tmp_path))  # ended while nobody watched
    jobs.append(job(other_study, 0, FOREVER, tmp_path / "other"))
    worker, ids = start_worker(launcher.image, jobs)
    kill_worker(worker)
    own = launcher.launch(job(study, 5, FOREVER, tmp_path))  # a live job of this worker
    try:
        wait_until(lambda: status(docker_client, ids[3]) == "exited", 30, "trial 3 to end")
        for n in (0, 1, 2):
            assert status(docker_client, ids[n]) == "running"  # survived their worker
        start = time.monotonic()
        reaped = launcher.reap_orphans(study, keep_trial_numbers={1})
        assert time.monotonic() - start < 8  # cooperative jobs stop on SIGTERM, in parallel
        assert sorted(reaped) == sorted([ids[0], ids[2], ids[3]])
        assert [status(docker_client, ids[n]) for n in range(5)] == ["gone", "running", "gone", "gone", "running"]
        assert own.poll() is None
        left = docker_client.containers.list(filters={"label": f"{LABEL_STUDY}={study}"})
        assert sorted(c.labels[LABEL_TRIAL] for c in left) == ["1", "5"]
        assert launcher.reap_orphans(study, keep_trial_numbers={1}) == []  # idempotent
    finally:
        own.stop(grace_period=0)
        launcher.reap_orphans(other_study, set())


def test_attach_resumes_following_a_running_container(launcher, docker_client, study, tmp_path):
    spec = job(study, 4, "for i in $(seq 1 12); do echo line $i; sleep 0.5; done; exit 5", tmp_path)
    worker, (container_id,) = start_worker(launcher.image, [spec])
    wait_until(lambda: "line 3" in job_output(spec.log_path), 30, "the job to get going")
    kill_worker(worker)
    time.sleep(1.2)  # output the dead worker never saw
    handle = launcher.attach(spec)
    assert handle is not None and handle.id == container_id
    result = handle.wait(timeout=60)
    assert (result.exit_code, result.stopped) == (5, False)
    lines = job_output(spec.log_path).split("\n")
    assert [line for line in lines if line] == [f"line {i}" for i in range(1, 13)]  # none lost or doubled
    assert status(docker_client, container_id) == "gone"


def test_attach_reads_the_result_of_a_container_that_ended_meanwhile(launcher, docker_client, study, tmp_path):
    spec = job(study, 6, "echo finished alone; exit 9", tmp_path)
    worker, (container_id,) = start_worker(launcher.image, [spec])
    kill_worker(worker)
    wait_until(lambda: status(docker_client, container_id) == "exited", 30, "the job to end")
    handle = launcher.attach(spec)
    assert handle is not None
    assert handle.poll().exit_code == 9
    assert job_output(spec.log_path).count("finished alone") == 1
    assert status(docker_client, container_id) == "gone"


def test_attach_finds_nothing_for_a_trial_without_container(launcher, study, tmp_path):
    assert launcher.attach(job(study, 7, "true", tmp_path)) is None
