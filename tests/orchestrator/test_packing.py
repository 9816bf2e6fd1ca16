"""Several trials on one slot, with real processes (the scripted trainer): they overlap in
time, a neighbour's out-of-memory error is retried alone, ``auto`` packs from a measured
peak, the not-learning rule prunes before any trial finished, and the report says how
trials were packed."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from automl.config import build_run_config
from automl.study.events import Note
from automl.study.packing import slot_usage
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard

from orchestrator_utils import scripted_config


class Recorder(ProgressBoard):
    """The real board (quiet) that also keeps every event."""

    def __init__(self):
        super().__init__(Console(file=open(os.devnull, "w")), metric="val_mAP50")
        self.events = []

    def __call__(self, event):
        self.events.append(event)
        super().__call__(event)


def _config(tmp_path, coco_dirs, **over):
    return build_run_config(scripted_config(tmp_path, coco_dirs, **over), use_cpu_variant=False, where="test")


def _times(log: Path, word: str) -> list[float]:
    return [float(x) for x in re.findall(rf"^JOB {word} (\S+)$", log.read_text(), re.MULTILINE)]


def _log(cfg, number: int) -> Path:
    return cfg.study_dir / f"trial_{number:04d}" / "stdout.log"


def _trials(cfg):
    return optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()


def _enqueue(cfg, lrs):
    study = open_study(cfg)
    for lr in lrs:
        study.enqueue_trial({"train.optim.lr": lr})


NO_PRUNING = {"name": "none"}


def test_two_trials_share_one_slot_at_the_same_time(tmp_path, coco_dirs, monkeypatch):
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.4")
    cfg = _config(tmp_path, coco_dirs, devices={"use": "cpu", "trials_per_slot": 2}, pruner=NO_PRUNING,
                  budget={"n_trials": 2})
    outcome = run_study(cfg, Recorder())
    first, second = _trials(cfg)
    assert [first.state, second.state] == [TrialState.COMPLETE, TrialState.COMPLETE]

    # the trainers' own clocks: each started before the other ended
    (start0,), (end0,) = _times(_log(cfg, 0), "START"), _times(_log(cfg, 0), "END")
    (start1,), (end1,) = _times(_log(cfg, 1), "START"), _times(_log(cfg, 1), "END")
    assert start0 < end1 and start1 < end0
    overlap = min(end0, end1) - max(start0, start1)
    assert overlap > 1.0, overlap  # most of their 5 x 0.4 s epochs, not a brush at the edges

    # attributes: the slot, who was there at the start, who shared it at all
    assert first.user_attrs["slot"] == second.user_attrs["slot"] == "cpu"
    # one took the empty slot, the other joined it
    packed = {t.number: t.user_attrs["packed_with"] for t in (first, second)}
    (joined,) = [n for n, beside in packed.items() if beside]
    assert packed[joined] == [1 - joined] and packed[1 - joined] == []
    assert first.user_attrs["ran_beside"] == [1] and second.user_attrs["ran_beside"] == [0]

    # each job gets half the cores, and the workspace's kernel caches
    for number in (0, 1):
        log = _log(cfg, number).read_text()
        assert f"ENV OMP_NUM_THREADS={max(1, (os.cpu_count() or 1) // 2)}" in log
        assert f"ENV TRITON_CACHE_DIR={cfg.workspace.resolve() / 'cache' / 'triton'}" in log

    # how they were packed, in the closing table's source and in the report
    (usage,) = slot_usage(_trials(cfg))
    assert usage.slot == "cpu" and usage.trials == (0, 1) and usage.max_at_once == 2
    page = outcome.report.read_text()
    packing = page.split("<h2>Packing</h2>")[1].split("</table>")[0]
    assert "<code>cpu</code>" in packing and "<td class=num>2</td>" in packing
    assert "at start: #" in page


def test_a_neighbours_out_of_memory_is_retried_alone(tmp_path, coco_dirs, monkeypatch):
    """The second of two jobs on a slot finds the card full (SCRIPTED_OOM_BESIDE) and fails
    with a CUDA OOM; the trial is not failed but run again once the slot is free."""
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.4")
    monkeypatch.setenv("SCRIPTED_OOM_BESIDE", str(tmp_path / "on_the_card"))
    cfg = _config(tmp_path, coco_dirs, devices={"use": "cpu", "trials_per_slot": 2}, pruner=NO_PRUNING,
                  budget={"n_trials": 2})
    board = Recorder()
    outcome = run_study(cfg, board)
    trials = _trials(cfg)
    assert len(trials) == 2  # retried within its own trial: the study still has two
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], \
        [t.user_attrs.get("failure") for t in trials]
    retried = [t for t in trials if t.user_attrs.get("oom_retry")]
    assert len(retried) == 1
    (trial,) = retried
    other = next(t for t in trials if t is not trial)
    assert trial.user_attrs["run_alone"] is True
    assert "CUDA out of memory" not in str(trial.user_attrs.get("failure"))  # not failed
    assert f"beside trial(s) {other.number}" in trial.user_attrs["oom_retry"]
    assert sorted(trial.intermediate_values) == list(range(5))  # every epoch, from the retry

    # the retry ran alone: it started after the neighbour's job ended
    starts = _times(_log(cfg, trial.number), "START")
    assert len(starts) == 2
    (other_end,) = _times(_log(cfg, other.number), "END")
    assert starts[1] >= other_end
    assert trial.user_attrs["packed_with"] == [] and trial.user_attrs["ran_beside"] == []
    assert any(getattr(e, "kind", None) == "retry_alone" and e.trial == trial.number for e in board.events)
    assert "out of GPU memory beside others, retried alone" in outcome.report.read_text()


def test_a_second_out_of_memory_alone_fails_with_the_diagnosis(tmp_path, coco_dirs, monkeypatch):
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.4")
    monkeypatch.setenv("SCRIPTED_PACK_DIR", str(tmp_path / "on_the_card"))
    cfg = _config(tmp_path, coco_dirs, devices={"use": "cpu", "trials_per_slot": 2}, pruner=NO_PRUNING,
                  budget={"n_trials": 2})
    _enqueue(cfg, [3e-4, 5e-2])  # 5e-2 runs out of memory beside trial 0, and again alone
    run_study(cfg, Recorder())
    good, oom = _trials(cfg)
    assert good.state == TrialState.COMPLETE
    assert oom.state == TrialState.FAIL
    assert oom.user_attrs["failure_code"] == "cuda_oom" and "batch_size" in oom.user_attrs["failure_fix"]
    assert "beside trial(s) 0" in oom.user_attrs["oom_retry"]  # the first attempt, packed
    assert len(_times(_log(cfg, 1), "START")) == 2  # retried once, then failed for good


def _fake_nvidia_smi(folder: Path, memory_mib: int) -> Path:
    """An ``nvidia-smi`` that lists one card of ``memory_mib``, for a host without a GPU."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncase \"$*\" in\n  *memory.total*) echo '0, {memory_mib}' ;;\n"
                      "  *) echo 0 ;;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_auto_packs_once_the_first_trial_reports_its_peak(tmp_path, coco_dirs, monkeypatch):
    """auto on a 10 000 MiB card: one trial until trial 0's first epoch says 2 000 MiB, then
    two (9 000 MiB usable / (2 000 + 1 024 context) = 2)."""
    monkeypatch.setenv("PATH", f"{_fake_nvidia_smi(tmp_path / 'bin', 10_000)}:{os.environ['PATH']}")
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.5")
    monkeypatch.setenv("SCRIPTED_PEAK_MIB", "2000")
    cfg = _config(tmp_path, coco_dirs, pruner=NO_PRUNING, budget={"n_trials": 3},
                  devices={"use": [0], "trials_per_slot": "auto", "min_cores_per_trial": 1})
    board = Recorder()
    run_study(cfg, board)
    trials = _trials(cfg)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(t.user_attrs["slot"] == "cuda:0" and t.user_attrs["peak_gpu_memory_mib"] == 2000 for t in trials)
    order = sorted((_times(_log(cfg, t.number), "START")[0], t.number) for t in trials)
    (start_a, a), (start_b, b) = order[:2]
    (end_a,) = _times(_log(cfg, a), "END")
    assert start_b >= start_a + 0.5  # waited for the first epoch's measurement (0.5 s per epoch)
    assert start_b < end_a  # then ran beside the first trial
    assert trials[b].user_attrs["packed_with"] == [a]
    notes = [e.text for e in board.events if isinstance(e, Note) and e.text.startswith("packing:")]
    assert any(f"trial {a} peaked at 2.0 GiB" in n and "2 trial(s) per slot" in n for n in notes), notes
    assert max(u.max_at_once for u in slot_usage(trials)) == 2  # never three on the card


def test_not_learning_prunes_before_any_trial_finished_and_the_job_goes_fast(tmp_path, coco_dirs, monkeypatch):
    """lr 1e-6 gives the scripted trainer a flat curve near 0.001: pruned at its second epoch
    by not_learning, while the median rule still waits for finished trials."""
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "0.4")
    pruner = {"name": "any", "rules": [{"name": "not_learning", "warmup_epochs": 2},
                                       {"name": "median", "warmup_epochs": 2, "startup_trials": 2}]}
    cfg = _config(tmp_path, coco_dirs, pruner=pruner, budget={"n_trials": 2})
    _enqueue(cfg, [1e-6, 3e-4])
    outcome = run_study(cfg, Recorder())
    flat, good = _trials(cfg)
    assert flat.state == TrialState.PRUNED and good.state == TrialState.COMPLETE
    assert flat.user_attrs["prune_epoch"] == 1 and flat.user_attrs["pruned_by"] == "not_learning"
    assert flat.datetime_complete < good.datetime_start  # nobody had finished when it was judged
    assert 0 <= flat.user_attrs["stop_seconds"] < 5
    assert "TRAINED EPOCH 4" not in _log(cfg, 0).read_text()
    page = outcome.report.read_text()
    assert "pruned at epoch 1 by not_learning; job gone" in page


@pytest.mark.parametrize("flag, expected", [("2", 2), ("auto", "auto")])
def test_trials_per_slot_flag_keeps_the_files_devices(tmp_path, flag, expected):
    import argparse

    import yaml

    from automl.cli.run import load_config_from_args

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"data": {"synth": {}}, "devices": [0, 1]}))
    args = argparse.Namespace(profile=None, config=path, study_name=None, storage=None, n_trials=None,
                              timeout=None, devices=None, workspace=tmp_path, launcher=None, train_data=None,
                              val_data=None, fixed=[], seed=None, trials_per_slot=flag)
    cfg = load_config_from_args(args, Console(file=open(os.devnull, "w")))
    assert cfg.devices.use == [0, 1] and cfg.devices.trials_per_slot == expected
