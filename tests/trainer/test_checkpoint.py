"""Checkpoint files: names, atomic alias, latest lookup, partial weight loading."""

from __future__ import annotations

import os

import torch

from dino.checkpoint import (
    LATEST,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_names_and_latest(tmp_path):
    assert checkpoint_name(3, 120) == "model_epoch_003_step_120.pth"
    assert latest_checkpoint(str(tmp_path)) is None
    save_checkpoint({"epoch": 0, "step": 5, "w": torch.ones(1)}, str(tmp_path), keep_named=True)
    save_checkpoint({"epoch": 1, "step": 10, "w": torch.full((1,), 2.0)}, str(tmp_path), keep_named=False)
    assert sorted(os.listdir(tmp_path)) == [LATEST, "model_epoch_000_step_5.pth"]
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / LATEST)
    assert load_checkpoint(str(tmp_path / LATEST))["epoch"] == 1  # the alias moved on, the epoch file did not
    assert load_checkpoint(str(tmp_path / "model_epoch_000_step_5.pth"))["epoch"] == 0
    os.remove(tmp_path / LATEST)
    save_checkpoint({"epoch": 12, "step": 60}, str(tmp_path), keep_named=True)
    os.remove(tmp_path / LATEST)
    assert latest_checkpoint(str(tmp_path)).endswith("model_epoch_012_step_60.pth")  # numeric, not lexical


def test_no_temporary_files_left(tmp_path):
    save_checkpoint({"epoch": 0, "step": 1}, str(tmp_path), keep_named=True)
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_partial_weights_skip_mismatched_shapes():
    src = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    dst = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 5))
    loaded, skipped = load_weights(dst, model_state({"model": src.state_dict()}))
    assert loaded == 2 and skipped == ["1.bias", "1.weight"]
    assert torch.equal(dst[0].weight, src[0].weight)
    # Lightning-style "state_dict" with "model." prefixes is understood too
    assert set(model_state({"state_dict": {"model.0.weight": torch.ones(1)}})) == {"0.weight"}


def test_rng_state_round_trip():
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
