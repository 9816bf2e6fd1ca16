"""Real jobs in containers: the bundled trainer (`dino train`) in the trainer image, and a
foreign image with its own entrypoint and user, as NVIDIA's TAO container is run."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import docker.errors
import pytest
import yaml

from automl.launchers.base import JobSpec
from automl.launchers.docker import DockerLauncher
from dino.data.synth import generate_dataset

from docker_test_utils import job_output, wait_until

pytestmark = pytest.mark.docker

# Every part of DINO present at toy width, 64 px images: seconds per epoch on one core.
TINY_MODEL = {
    "backbone": "resnet_tiny", "hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 2,
    "dim_feedforward": 64, "num_queries": 20, "num_select": 20, "num_feature_levels": 3,
    "return_interm_indices": [1, 2, 3], "dn_number": 5,
}
TINY_AUGMENTATION = {
    "scales": [64], "train_random_resize": [64], "train_random_crop_min": 48, "train_random_crop_max": 64,
    "random_resize_max_size": 96, "test_random_resize": 64,
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """8 train + 4 val generated images of 2 classes; mounted read-only into the job, so
    readable by all, as a staged dataset is (pytest's folders are private)."""
    root = tmp_path_factory.mktemp("shapes")
    paths = generate_dataset(str(root), 12, 2, 64, seed=3, val_fraction=0.34, objects=(1, 2), object_size=(0.25, 0.6))
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return paths


def train_job(study: str, trial: int, shapes, root: Path, epochs: int) -> JobSpec:
    results = root / f"trial_{trial}"
    results.mkdir(parents=True)
    spec = {
        "results_dir": "/nonexistent",  # replaced on the command line, as the orchestrator does
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [{"image_dir": shapes.train.image_dir, "json_file": shapes.train.json_file}],
            "val_data_sources": [{"image_dir": shapes.val.image_dir, "json_file": shapes.val.json_file}],
            "num_classes": 3, "batch_size": 4, "workers": 0, "augmentation": TINY_AUGMENTATION,
        },
        "train": {"num_epochs": epochs, "seed": 7, "optim": {"lr": 0.002, "lr_steps": [100]}},
    }
    (results / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    dataset_root = Path(shapes.train.image_dir).parents[1]
    return JobSpec(
        study, trial, ("dino", "train", "-e", str(results / "spec.yaml"), f"results_dir={results}"),
        results, results / "stdout.log", env={"OMP_NUM_THREADS": "1"}, read_only_paths=(dataset_root,),
    )


def status_lines(results: Path) -> list[dict]:
    path = results / "train" / "status.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_dino_train_runs_in_the_trainer_image(launcher, study, shapes, tmp_path):
    spec = train_job(study, 0, shapes, tmp_path, epochs=2)
    result = launcher.launch(spec).wait(timeout=300)
    log = job_output(spec.log_path)
    assert (result.exit_code, result.oom_killed) == (0, False), log[-3000:]
    lines = status_lines(spec.results_dir)
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "SUCCESS"
    epochs = [line for line in lines if "epoch" in line]
    assert [line["epoch"] for line in epochs] == [0, 1]
    assert {"val_mAP", "val_mAP50"} <= set(epochs[-1]["kpi"])
    assert "Validation mAP50 :" in log
    assert (spec.results_dir / "train" / "dino_model_latest.pth").exists()
    assert (spec.results_dir / "train" / "status.json").stat().st_uid != 0  # written by a non-root user


def test_stopping_a_training_container_is_prompt(launcher, docker_client, study, shapes, tmp_path):
    spec = train_job(study, 1, shapes, tmp_path, epochs=50)
    handle = launcher.launch(spec)
    wait_until(lambda: any("epoch" in line for line in status_lines(spec.results_dir)), 240, "the first epoch")
    start = time.monotonic()
    result = handle.stop(grace_period=10)
    assert time.monotonic() - start < 10
    assert (result.exit_code, result.stopped) == (143, True), job_output(spec.log_path)[-2000:]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(handle.id)


@pytest.fixture(scope="module")
def foreign_image(docker_client, launcher, tmp_path_factory):
    """Like NGC/TAO images: an ENTRYPOINT that prints a banner and execs the command, root
    as the image user, no bundled trainer."""
    context = tmp_path_factory.mktemp("foreign")
    (context / "entrypoint.sh").write_text('#!/bin/sh\necho "== FOREIGN CONTAINER banner =="\nexec "$@"\n')
    (context / "Dockerfile").write_text(
        f"FROM {launcher.image}\n"
        "USER root\n"
        "COPY entrypoint.sh /opt/entrypoint.sh\n"
        "RUN chmod 755 /opt/entrypoint.sh\n"
        'ENTRYPOINT ["/opt/entrypoint.sh"]\n'
    )
    tag = "automl-test-foreign:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True, capture_output=True,
                   env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}, timeout=300)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_a_foreign_image_runs_its_entrypoint_and_our_command(docker_client, foreign_image, study, tmp_path):
    launcher = DockerLauncher(image=foreign_image, client=docker_client)
    results = tmp_path / "trial_0"
    spec = JobSpec(study, 0, ("python3", "-c", "import os; print('uid', os.getuid()); open('out', 'w').write('x')"),
                   results, results / "stdout.log")
    result = launcher.launch(spec).wait(timeout=60)
    out = job_output(spec.log_path)
    assert result.exit_code == 0, out
    assert out.splitlines()[0] == "== FOREIGN CONTAINER banner =="
    assert "uid 0" not in out and (results / "out").stat().st_uid != 0
