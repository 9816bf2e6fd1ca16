"""``train.num_gpus=2`` on CPU: two gloo worker processes under one ``dino train`` parent.

The same code runs NCCL on GPUs; here every rank is a CPU process (the fallback when no
CUDA device is visible). Whole runs check what an orchestrator sees: one process group,
one exit code, one status stream and one set of checkpoints, each rank seeing half the
data; in-process tests check the pieces (sharded validation, samplers, DDP's
all-parameters-used assumption).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dino_test_utils import TINY_MODEL, dino_env, read_status, run_dino, tiny_spec, write_spec

EPOCHS = 3
TWO = ["train.num_gpus=2", "train.gpu_ids=[0,1]"]
STEPS_1GPU = 6  # shapes_small: 24 train images / batch 4, what one process takes per epoch
STEPS_LEARNABLE_1GPU = 18  # shapes_learnable: 72 train images / batch 4


def popen_train(spec_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dino", "train", "-e", str(spec_path), *TWO, *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dino_env(),
                            start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"trainer exited early ({proc.returncode}):\n{proc.communicate()[0]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the trainer")
        time.sleep(0.05)


def group_members(pgid: int) -> list[str]:
    """Command lines of the live processes in process group ``pgid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append(f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return found


def assert_group_gone(pgid: int, timeout: float = 3.0) -> None:
    deadline = time.time() + timeout
    while (left := group_members(pgid)) and time.time() < deadline:
        time.sleep(0.05)
    assert not left, f"orphan processes: {left}"


def stop_and_time(proc: subprocess.Popen, send) -> tuple[int, float, str]:
    sent = time.time()
    send()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the trainer did not stop within 20 s of SIGTERM")
    return proc.returncode, time.time() - sent, out


@pytest.fixture(scope="module")
def killed_and_resumed(shapes_learnable, tmp_path_factory):
    """A 2-process run SIGTERMed (whole group, as the local launcher does) after its first
    checkpoint, then the same command rerun to the end; on data the tiny model learns."""
    root = tmp_path_factory.mktemp("ddp")
    spec_path = write_spec(root / "spec.yaml", tiny_spec(shapes_learnable, root / "results", train={"num_epochs": EPOCHS}))
    train_dir = root / "results" / "train"
    proc = popen_train(spec_path)
    wait_for(lambda: (train_dir / f"model_epoch_000_step_{STEPS_LEARNABLE_1GPU // 2}.pth").exists(), proc)
    time.sleep(0.3)  # into epoch 1
    code, took, killed_out = stop_and_time(proc, lambda: os.killpg(proc.pid, signal.SIGTERM))
    orphans = group_members(proc.pid)
    time.sleep(0.5)
    before = read_status(root / "results")
    files_after_kill = sorted(os.listdir(train_dir))
    resumed = run_dino("train", "-e", str(spec_path), *TWO)
    return {"root": root, "spec": spec_path, "train_dir": train_dir, "kill_code": code, "kill_took": took,
            "killed_out": killed_out, "orphans": orphans, "pgid": proc.pid, "before": before,
            "files_after_kill": files_after_kill, "resumed": resumed,
            "after": read_status(root / "results")[len(before):]}


def test_sigterm_to_the_group_stops_every_rank_quickly(killed_and_resumed):
    run = killed_and_resumed
    assert run["kill_code"] == 128 + signal.SIGTERM, run["killed_out"]
    assert run["kill_took"] < 10, run["killed_out"]  # inside the launchers' grace period
    assert not run["orphans"]
    assert_group_gone(run["pgid"])
    last = run["before"][-1]
    assert last["status"] == "FAILURE" and "SIGTERM" in last["message"] and "resume" in last["message"]
    assert sum(line["status"] == "FAILURE" for line in run["before"]) == 1  # the parent's, not one per rank
    assert not [n for n in run["files_after_kill"] if ".tmp" in n]
    assert run["killed_out"].count("Epoch 0/2 done") == 1  # rank 0 alone prints


def test_resumed_run_continues_with_one_status_stream_and_half_the_steps(killed_and_resumed):
    run = killed_and_resumed
    proc, after = run["resumed"], run["after"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done_before = [line["epoch"] for line in run["before"] if "epoch" in line]
    assert done_before and done_before[0] == 0
    epoch_lines = [line for line in after if "epoch" in line]
    # an epoch in the status log has its checkpoint (written together), so the rerun resumes
    # right after the last reported epoch and trains none twice
    assert f"Resuming from {run['train_dir']}" in proc.stdout
    assert f"epoch {max(done_before)} finished" in proc.stdout, proc.stdout
    assert [line["epoch"] for line in epoch_lines] == list(range(max(done_before) + 1, EPOCHS))
    # each rank sees half of the 72 images: 9 steps per epoch instead of one process's 18
    steps = STEPS_LEARNABLE_1GPU // 2
    for line in epoch_lines:
        assert line["step"] == steps * (line["epoch"] + 1) and line["max_step"] == steps * EPOCHS
    # one writer: the same lines a single process writes, once each
    messages = [(line["status"], line["message"]) for line in after]
    assert messages.count(("STARTED", "Starting DINO train.")) == 1
    assert messages.count(("STARTED", "Starting Training Loop.")) == 1
    assert [m for m in messages if m[0] == "SUCCESS"] == [("SUCCESS", "Train finished successfully.")]
    assert messages[-1][0] == "SUCCESS" and "train_loss" in after[-1]["kpi"]  # kpi repeats on the parent's line
    assert sum(m[1].startswith("Resuming training from") for m in messages) == 1
    assert sum(m[1] == "Eval metrics generated." for m in messages) == len(epoch_lines)
    assert any(m[1].startswith("Distributed training: 2 processes, gloo") for m in messages)
    assert proc.stdout.count("Resuming from") == 1
    assert len(re.findall(r"^Validation mAP50 : \S+$", proc.stdout, re.M)) == len(epoch_lines)
    names = sorted(os.listdir(run["train_dir"]))
    assert names == ["dino_model_latest.pth", "model_best.json", "model_best.pth",
                     *(f"model_epoch_{e:03d}_step_{steps * (e + 1)}.pth" for e in range(EPOCHS)), "status.json"]
    ckpt = torch.load(run["train_dir"] / "dino_model_latest.pth", map_location="cpu", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2 and ckpt["epoch"] == EPOCHS - 1
    assert not any(k.startswith("module.") for k in ckpt["model"])  # loadable by one process


def test_a_ddp_checkpoint_evaluates_in_one_process(killed_and_resumed, monkeypatch, capsys):
    """``dino evaluate`` (one process, whole val set) on the checkpoint of the sharded run
    (in this process, on the CPU as the run was)."""
    from dino.cli import main

    run = killed_and_resumed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", "-e", str(run["spec"])]) == 0
    value = float(re.search(r"^Test mAP50 : (\S+)$", capsys.readouterr().out, re.M).group(1))
    final = [line for line in read_status(run["root"] / "results") if "epoch" in line][-1]["kpi"]
    assert value > 0.0  # a score to compare, not 0.0 == 0.0
    assert value == pytest.approx(float(final["val_mAP50"]), abs=1e-6)


def test_sigterm_to_the_parent_alone_stops_the_ranks(shapes_small, tmp_path):
    """As Docker's init does: the signal reaches the parent only, which forwards it."""
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(shapes_small, tmp_path / "results", train={"num_epochs": 50}))
    proc = popen_train(spec)
    status = tmp_path / "results" / "train" / "status.json"
    wait_for(lambda: status.exists() and "Starting Training Loop." in status.read_text(), proc)
    code, took, out = stop_and_time(proc, lambda: os.kill(proc.pid, signal.SIGTERM))
    assert code == 128 + signal.SIGTERM and took < 10, out
    assert_group_gone(proc.pid)
    last = read_status(tmp_path / "results")[-1]
    assert last["status"] == "FAILURE" and "SIGTERM" in last["message"]


def test_a_failing_rank_fails_the_run(shapes_small, tmp_path):
    """One unreadable training image: the rank that draws it fails, the other must not hang."""
    from dino.data.synth import generate_dataset

    data = generate_dataset(str(tmp_path / "data"), 32, 2, 64, seed=11, val_fraction=0.25, objects=(1, 2),
                            object_size=(0.25, 0.6))
    bad = sorted(Path(data.train.image_dir).iterdir())[5]
    bad.write_bytes(b"not an image")
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(data, tmp_path / "results"))
    proc = popen_train(spec)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a failed rank left the run hanging")
    assert proc.returncode == 2, out  # the single-process code for a bad image
    assert_group_gone(proc.pid)
    lines = read_status(tmp_path / "results")
    assert lines[-1]["status"] == "FAILURE" and "cannot read image" in lines[-1]["message"], lines[-1]
    assert bad.name in lines[-1]["message"]
    assert sum(line["status"] == "FAILURE" for line in lines) == 1


def test_gpu_ids_that_do_not_match_num_gpus_are_bad_input(shapes_small, tmp_path, capsys):
    from dino.cli import main

    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(shapes_small, tmp_path / "results"))
    assert main(["train", "-e", str(spec), "train.num_gpus=2", "train.gpu_ids=[0]"]) == 2
    assert "train.gpu_ids [0] must list 2 device" in capsys.readouterr().err
    last = read_status(tmp_path / "results")[-1]
    assert last["status"] == "FAILURE" and "train.gpu_ids" in last["message"]
    assert not (tmp_path / "results" / "train" / "dino_model_latest.pth").exists()


@pytest.mark.parametrize("ids, message", [([0, 0], "2 distinct device ids"), ([0, 1, 2], "2 distinct device ids")])
def test_gpu_ids_must_be_one_distinct_id_per_process(ids, message):
    from dino.config import SpecError, load_spec
    from dino.distributed import plan_devices

    with pytest.raises(SpecError, match=message):
        load_spec(None, ["train.num_gpus=2", f"train.gpu_ids={ids}"])
    with pytest.raises(SpecError, match=message):
        plan_devices(2, ids)
    if not torch.cuda.is_available():
        assert plan_devices(2, [0, 1]) == ("gloo", ["cpu", "cpu"])


# ---------------------------------------------------------------- pieces, in process

@pytest.fixture(scope="module")
def tiny_setup(shapes_small, tmp_path_factory):
    from dino.config import load_spec
    from dino.data import build_dataset
    from dino.models import build_dino

    root = tmp_path_factory.mktemp("pieces")
    spec, _ = load_spec(write_spec(root / "spec.yaml", tiny_spec(shapes_small, root / "r")))
    torch.manual_seed(0)
    model, criterion, post = build_dino(spec.model, spec.dataset.num_classes)
    d = spec.dataset
    return {"spec": spec, "model": model, "criterion": criterion, "post": post,
            "train": build_dataset(d.train_data_sources, d, True, "train"),
            "val": build_dataset(d.val_data_sources, d, False, "val")}


def test_training_shares_are_disjoint_and_equal(tiny_setup):
    from dino.data import train_loader

    ds, cfg = tiny_setup["train"], tiny_setup["spec"].dataset
    for epoch in (0, 1):
        shares = [list(train_loader(ds, cfg, 7, epoch, False, rank=r, world_size=2).sampler) for r in range(2)]
        assert len(shares[0]) == len(shares[1]) == len(ds) // 2
        assert not set(shares[0]) & set(shares[1])
        assert len(train_loader(ds, cfg, 7, epoch, False, rank=1, world_size=2)) == STEPS_1GPU // 2
    again = list(train_loader(ds, cfg, 7, 1, False, rank=0, world_size=2).sampler)
    assert again == shares[0]  # (seed, epoch) fixes the order: a resumed run sees the same shares
    assert list(train_loader(ds, cfg, 7, 0, False, rank=0, world_size=2).sampler) != again  # reshuffled per epoch


def test_sharded_validation_scores_every_image_once(tiny_setup):
    """Rank 1 hands its shard's detections over, rank 0 scores the union: the same
    detections and mAP as one process over the whole validation set."""
    from dino.data import val_loader
    from dino.engine import evaluate

    s = tiny_setup
    ds, cfg, dev = s["val"], s["spec"].dataset, torch.device("cpu")
    args = (s["model"], s["criterion"], s["post"])
    whole = evaluate(*args, val_loader(ds, cfg, 4, False), ds.coco, dev, "fp32")
    shards = [val_loader(ds, cfg, 4, False, rank=r, world_size=2) for r in range(2)]
    assert sorted(i for sh in shards for i in sh.sampler) == list(range(len(ds)))
    handed: list = []
    assert evaluate(*args, shards[1], ds.coco, dev, "fp32", gather=lambda part: handed.append(part)) is None
    merged = evaluate(*args, shards[0], ds.coco, dev, "fp32", gather=lambda part: [part, handed[0]])

    def keys(dets):  # (COCO.loadRes adds ids of its own to the dicts)
        return sorted((d["image_id"], d["category_id"], d["score"], d["bbox"]) for d in dets)

    assert len(whole["detections"]) > 0
    assert keys(merged["detections"]) == keys(whole["detections"])
    assert merged["stats"] == whole["stats"]
    assert merged["loss"] == pytest.approx(whole["loss"], rel=1e-5)


@pytest.mark.parametrize("variant", [{}, {"use_dn": False}, {"aux_loss": False}])
def test_every_trainable_parameter_reaches_the_loss(variant):
    """Why DDP runs with find_unused_parameters=False: with denoising, two-stage selection
    and aux losses on or off, and on batches with no boxes, every trainable parameter gets
    a gradient on every step (else DDP would wait forever for its all-reduce)."""
    from dino.config.model import ModelConfig
    from dino.models import build_dino

    torch.manual_seed(0)
    model, criterion, _ = build_dino(ModelConfig(**{**TINY_MODEL, **variant}), 3)
    model.train()
    criterion.train()
    images, masks = torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    for counts in ([1, 2], [0, 0], [0, 1]):
        targets = [{"labels": torch.randint(1, 3, (n,)), "boxes": torch.rand(n, 4) * 0.3 + 0.3} for n in counts]
        model.zero_grad(set_to_none=True)
        criterion(model(images, masks, targets), targets)["loss"].backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, (variant, counts, unused[:5])
