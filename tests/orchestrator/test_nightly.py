"""Nights with the scripted trainer (real subprocesses through the local launcher):
promotion only on a real win, a crash keeps the champion, no overlap, on time."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from automl.cli import main as automl_main
from automl.config import build_run_config
from automl.config.nightly import build_nightly_config
from automl.errors import ConfigError
from automl.study import champion as champion_mod
from automl.study.champion import ChampionError, current_champion, decide, promote, prune_versions
from automl.study.night_record import read_records
from automl.study.nightly import run_night
from automl.study.run_lock import run_lock

from orchestrator_utils import SCRIPTED, scripted_config

NIGHT1, NIGHT2, NIGHT3 = dt.date(2026, 11, 24), dt.date(2026, 11, 25), dt.date(2026, 11, 26)
# the scripted trainer's held-out score is 0.9 * exp(-log10(lr / 3e-4) ** 2)
GOOD_LR, WORSE_LR = 3e-4, 3e-5


def raw_config(tmp_path, coco_dirs, nightly=None, **over):
    over.setdefault("trainer", {"command": [sys.executable, str(SCRIPTED), "train"],
                                "space": str(tmp_path / "space.yaml")})
    over.setdefault("study", {"name": "dino", "heartbeat_interval": 1, "grace_period": 4})
    over.setdefault("budget", {"n_trials": 2})
    raw = scripted_config(tmp_path, coco_dirs, **over)
    raw["fixed"] = {**raw["fixed"], "train.num_epochs": 3}
    raw["nightly"] = nightly or {}
    return raw


def nightly_cfg(tmp_path, coco_dirs, nightly=None, **over):
    return build_nightly_config(raw_config(tmp_path, coco_dirs, nightly, **over),
                                lambda r: build_run_config(r, use_cpu_variant=False, where="test"), "test")


def with_lr(cfg, lr):
    """The same nightly whose trials all train with ``lr`` (fixed, so the outcome is known)."""
    run = cfg.run.model_copy(update={"fixed": {**cfg.run.fixed, "train.optim.lr": lr}})
    return type(cfg)(run, cfg.nightly)


def quiet(event):
    pass


# ------------------------------------------------------------------ the decision alone


@pytest.mark.parametrize("candidate, champion, margin, maximize, promote_it, word", [
    (0.60, 0.50, 0.0, True, True, "wins"),
    (0.50, 0.50, 0.0, True, False, "tie"),
    (0.49, 0.50, 0.0, True, False, "loses"),
    (0.505, 0.50, 0.01, True, False, "margin"),
    (0.5101, 0.50, 0.01, True, True, "wins"),
    (0.50, 0.50, 0.01, True, False, "tie"),
    (0.20, 0.30, 0.0, False, True, "wins"),  # a loss metric: lower wins
    (0.30, 0.30, 0.0, False, False, "tie"),
])
def test_only_a_real_win_promotes(candidate, champion, margin, maximize, promote_it, word):
    d = decide(candidate, champion, has_champion=True, margin=margin, maximize=maximize, metric="m")
    assert d.promote is promote_it and word in d.reason


def test_what_cannot_be_measured_never_promotes():
    assert decide(0.6, None, has_champion=False, margin=0, maximize=True, metric="m").promote
    assert not decide(None, 0.5, has_champion=True, margin=0, maximize=True, metric="m",
                      candidate_error="exit code 1").promote
    kept = decide(0.9, None, has_champion=True, margin=0, maximize=True, metric="m", champion_error="gone")
    assert not kept.promote and "gone" in kept.reason


# ------------------------------------------------------------------ the champion folder


def model_files(tmp_path, name, payload):
    d = tmp_path / name
    d.mkdir()
    (d / "spec.yaml").write_text(f"name: {name}\n")
    (d / "m.pth").write_bytes(payload)
    (d / "m.onnx").write_bytes(b"onnx-" + payload)
    return d / "spec.yaml", d / "m.pth", d / "m.onnx"


def do_promote(folder, files, study, trial):
    spec, ckpt, onnx = files
    return promote(folder, spec=spec, checkpoint=ckpt, onnx=onnx, study=study, trial=trial, night="2026-11-24",
                   params={"lr": 1e-4}, study_metric="val_mAP50", study_value=0.5, holdout_metric="test_mAP50",
                   holdout_value=0.4, reason="test")


def test_promotion_swaps_current_atomically_and_keeps_versions(tmp_path):
    folder = tmp_path / "champion"
    assert current_champion(folder) is None
    first = do_promote(folder, model_files(tmp_path, "a", b"A"), "dino-20261124", 3)
    assert (folder / "current").is_symlink() and os.readlink(folder / "current") == "versions/dino-20261124-t0003"
    assert first.checkpoint.read_bytes() == b"A" and first.onnx.read_bytes() == b"onnx-A"
    second = do_promote(folder, model_files(tmp_path, "b", b"B"), "dino-20261125", 1)
    assert current_champion(folder) == second and second.checkpoint.read_bytes() == b"B"
    assert (first.path / "model.pth").read_bytes() == b"A"  # the previous version stays until pruned
    do_promote(folder, model_files(tmp_path, "c", b"C"), "dino-20261126", 0)
    assert [p.name for p in prune_versions(folder, keep=1)] and len(list((folder / "versions").iterdir())) == 1
    assert current_champion(folder).checkpoint.read_bytes() == b"C"


def test_a_promotion_that_crashes_midway_leaves_the_champion_as_it_was(tmp_path, monkeypatch):
    folder = tmp_path / "champion"
    do_promote(folder, model_files(tmp_path, "a", b"A"), "dino-20261124", 3)
    before = current_champion(folder)
    real_place = champion_mod._place

    def crash_after_the_checkpoint(src, dst):
        real_place(src, dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(champion_mod, "_place", crash_after_the_checkpoint)
    with pytest.raises(OSError, match="No space left"):
        do_promote(folder, model_files(tmp_path, "b", b"B"), "dino-20261125", 1)
    assert current_champion(folder) == before and before.checkpoint.read_bytes() == b"A"
    assert [p.name for p in (folder / "versions").iterdir()] == ["dino-20261124-t0003"]  # no half version


def test_a_broken_champion_folder_says_how_to_repair_it(tmp_path):
    folder = tmp_path / "champion"
    (folder / "versions" / "x").mkdir(parents=True)
    os.symlink("versions/x", folder / "current")
    with pytest.raises(ChampionError, match="remove"):
        current_champion(folder)


# ------------------------------------------------------------------ whole nights (scripted trainer)


def test_a_first_night_promotes_a_tie_and_a_loss_keep_the_champion(tmp_path, coco_dirs):
    cfg = nightly_cfg(tmp_path, coco_dirs, nightly={"champion": {"margin": 0.0}, "warm_start": {"top_k": 0}})
    first = run_night(with_lr(cfg, GOOD_LR), quiet, night=NIGHT1)
    assert first.status == "done" and first.promoted and "no champion yet" in first.reason
    champ = current_champion(cfg.champion_dir)
    assert champ.study == "dino-20261124" and champ.holdout_value == pytest.approx(0.9, abs=1e-4)
    assert champ.spec.is_file() and champ.checkpoint.is_file() and champ.onnx.read_text().startswith("exported ")
    assert yaml.safe_load(champ.spec.read_text())["train"]["optim"]["lr"] == GOOD_LR

    tie = run_night(with_lr(cfg, GOOD_LR), quiet, night=NIGHT2)
    assert tie.status == "done" and not tie.promoted and tie.reason.startswith("tie")
    assert tie.evaluation.champion == tie.evaluation.candidate == pytest.approx(0.9, abs=1e-4)

    loss = run_night(with_lr(cfg, WORSE_LR), quiet, night=NIGHT3)
    assert loss.status == "done" and not loss.promoted and loss.reason.startswith("loses")
    assert loss.evaluation.candidate < loss.evaluation.champion
    assert current_champion(cfg.champion_dir) == champ  # the same version, untouched
    assert [r.night for r in read_records(cfg.record_path)] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    page = cfg.nightly_dir / "report" / "nightly.html"
    assert "dino-20261126" in page.read_text() and (cfg.nightly_dir / "report" / "champion.png").stat().st_size > 0


def test_a_win_by_the_margin_promotes(tmp_path, coco_dirs):
    cfg = nightly_cfg(tmp_path, coco_dirs, nightly={"champion": {"margin": 0.05}, "warm_start": {"top_k": 0}})
    run_night(with_lr(cfg, WORSE_LR), quiet, night=NIGHT1)  # champion scores 0.9 * e^-1 = 0.331
    better = run_night(with_lr(cfg, GOOD_LR), quiet, night=NIGHT2)  # 0.9
    assert better.promoted and better.reason.startswith("wins")
    assert current_champion(cfg.champion_dir).study == "dino-20261125"
    assert better.champion == f"dino-20261125#{better.best_trial}" and better.champion_value == pytest.approx(0.9, 1e-3)


def test_a_night_that_crashes_keeps_the_champion_and_the_next_night_runs(tmp_path, coco_dirs, monkeypatch):
    cfg = nightly_cfg(tmp_path, coco_dirs, nightly={"warm_start": {"top_k": 1}})
    run_night(with_lr(cfg, WORSE_LR), quiet, night=NIGHT1)
    champ = current_champion(cfg.champion_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("automl.study.nightly.promote", disk_full)  # the better night dies while promoting
    with pytest.raises(OSError):
        run_night(with_lr(cfg, GOOD_LR), quiet, night=NIGHT2)
    crashed = read_records(cfg.record_path)[-1]
    assert crashed.status == "crashed" and "No space left" in crashed.error and not crashed.promoted
    assert current_champion(cfg.champion_dir) == champ
    monkeypatch.undo()
    nxt = run_night(with_lr(cfg, GOOD_LR), quiet, night=NIGHT3)  # the lock is free, nothing is stuck
    assert nxt.status == "done" and nxt.promoted
    assert "dino-20261125" in nxt.warm_start.from_studies  # the crashed night's trials still count as history


def test_a_night_killed_outright_leaves_the_champion_and_shows_as_died(tmp_path, coco_dirs, capsys):
    raw = raw_config(tmp_path, coco_dirs, budget={"n_trials": 3})
    raw["fixed"]["train.optim.lr"] = GOOD_LR
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "SCRIPTED_EPOCH_SECONDS": "0.4"}
    cmd = [sys.executable, "-m", "automl", "nightly", "--config", str(path)]
    assert subprocess.run([*cmd, "--night", str(NIGHT1)], env=env, capture_output=True).returncode == 0
    cfg = nightly_cfg(tmp_path, coco_dirs)
    champ = current_champion(cfg.champion_dir)
    env["SCRIPTED_EPOCH_SECONDS"] = "5"
    proc = subprocess.Popen([*cmd, "--night", str(NIGHT2)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "ws" / "dino-20261125").glob("trial_*/stdout.log")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the night and its trial job: power loss
    proc.wait()
    assert current_champion(cfg.champion_dir) == champ
    assert automl_main(["nightly", "history", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "died" in table and "2026-11-25" in table
    env["SCRIPTED_EPOCH_SECONDS"] = "0.2"
    again = subprocess.run([*cmd, "--night", str(NIGHT3)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_records(cfg.record_path)[-1].status == "done"


def test_no_overlap_and_no_second_run_of_a_done_night(tmp_path, coco_dirs):
    cfg = nightly_cfg(tmp_path, coco_dirs)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom automl.study.run_lock import run_lock\n"
        f"with run_lock({str(cfg.lock_path)!r}, what='night 2026-11-24 (dino-20261124)'):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        skipped = run_night(cfg, quiet, night=NIGHT2)
        assert skipped.status == "skipped" and f"pid {holder.pid}" in skipped.reason
    finally:
        holder.kill()
        holder.wait()
    assert not cfg.run.workspace.joinpath("study.db").exists()  # the skipped night touched no study
    done = run_night(cfg, quiet, night=NIGHT2)
    assert done.status == "done"
    again = run_night(cfg, quiet, night=NIGHT2)
    assert again.status == "skipped" and "--force" in again.reason
    forced = run_night(cfg, quiet, night=NIGHT2, force=True)
    assert forced.status == "done"
    with run_lock(cfg.lock_path, what="this test"):  # in this process too
        assert run_night(cfg, quiet, night=NIGHT3).status == "skipped"


def test_the_night_stops_on_time(tmp_path, coco_dirs, monkeypatch):
    monkeypatch.setenv("SCRIPTED_EPOCH_SECONDS", "1.0")
    cfg = nightly_cfg(tmp_path, coco_dirs, nightly={"budget": "12s", "reserve": "4s"}, budget={"n_trials": 50})
    started = time.monotonic()
    record = run_night(cfg, quiet, night=NIGHT1)
    took = time.monotonic() - started
    assert record.status == "done" and record.stopped_on_time
    assert took < 12 + 4, f"the night took {took:.1f} s of a 12 s budget"
    study = optuna.load_study(study_name="dino-20261124", storage=cfg.run.storage_url)
    # the trial running at the deadline was stopped and queued again, not lost
    assert study.get_trials(states=(TrialState.WAITING,))
    assert sum(record.trials.values()) < 50


def test_config_errors_name_the_key(tmp_path, coco_dirs):
    with pytest.raises(ConfigError, match="nightly.champion.margn"):
        nightly_cfg(tmp_path, coco_dirs, nightly={"champion": {"margn": 0.1}})
    with pytest.raises(ConfigError, match="not a duration"):
        nightly_cfg(tmp_path, coco_dirs, nightly={"budget": "all night"})
    with pytest.raises(ConfigError, match="shorter than the budget"):
        nightly_cfg(tmp_path, coco_dirs, nightly={"budget": "1h", "reserve": "2h"})
    with pytest.raises(ConfigError, match="IANA"):
        nightly_cfg(tmp_path, coco_dirs, nightly={"timezone": "Berlin"})
    with pytest.raises(ConfigError, match="nightly.champion.metric"):
        nightly_cfg(tmp_path, coco_dirs, metric={"name": "accuracy"})


def test_the_record_is_json_lines(tmp_path, coco_dirs):
    cfg = nightly_cfg(tmp_path, coco_dirs)
    run_night(cfg, quiet, night=NIGHT1)
    lines = [json.loads(line) for line in cfg.record_path.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["running", "done"]
    end = lines[-1]
    assert {"stage", "warm_start", "tune", "evaluate", "promote", "retention", "total"} <= set(end["durations"])
    assert end["promoted"] and end["reason"] and end["best_value"] is not None and end["evaluation"]["candidate"]


def test_each_night_stages_the_newest_data_from_s3(tmp_path, coco_dirs, aws_env):
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="night-data")
    for split, root in (("train", coco_dirs[0]), ("val", coco_dirs[1])):
        s3.upload_file(str(root / "annotations.json"), "night-data", f"{split}/annotations.json")
        for image in (root / "images").iterdir():
            s3.upload_file(str(image), "night-data", f"{split}/images/{image.name}")
    cfg = nightly_cfg(tmp_path, coco_dirs, data={"train": "s3://night-data/train", "val": "s3://night-data/val"},
                      budget={"n_trials": 1})
    assert run_night(cfg, quiet, night=NIGHT1).data.staged_afresh == ["train", "val"]
    assert run_night(cfg, quiet, night=NIGHT2).data.staged_afresh == []  # unchanged: cache hits by ETag
    coco = json.loads((coco_dirs[0] / "annotations.json").read_text())
    coco["annotations"] = coco["annotations"][:-1]  # tonight's export dropped a box
    s3.put_object(Bucket="night-data", Key="train/annotations.json", Body=json.dumps(coco).encode())
    third = run_night(cfg, quiet, night=NIGHT3)
    assert third.data.staged_afresh == ["train"] and third.status == "done"
    spec = yaml.safe_load((cfg.run.workspace / "dino-20261126" / "trial_0000" / "spec.yaml").read_text())
    trained_on = json.loads(Path(spec["dataset"]["train_data_sources"][0]["json_file"]).read_text())
    assert len(trained_on["annotations"]) == len(coco["annotations"])  # tonight's trials read the new file
