"""Two real nights on the CPU: the real ``dino`` trainer on a tiny generated dataset, its
``dino evaluate`` and ``dino export`` through the local launcher, promotion, the record,
the history table, then a second night that warm-starts from the first."""

import datetime as dt
import json
import os
from pathlib import Path

import onnx
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from automl.cli import main as automl_main
from automl.config import build_run_config, read_profile
from automl.config.loader import deep_merge
from automl.config.nightly import build_nightly_config
from automl.study import attrs
from automl.study.champion import current_champion
from automl.study.night_record import read_records
from automl.study.nightly import run_night
from automl.ui.progress import ProgressBoard


@pytest.mark.slow
def test_two_real_nights_promote_then_warm_start(tmp_path, capsys):
    from dino.data.synth import generate_dataset

    data = generate_dataset(out_dir=tmp_path / "synth", num_images=16, num_classes=2, image_size=64, seed=0,
                            val_fraction=0.25, archive=False)
    holdout = generate_dataset(out_dir=tmp_path / "holdout", num_images=8, num_classes=2, image_size=64, seed=7,
                               val_fraction=0.5, archive=False)
    # the smoke profile's CPU variant, smaller still: 2 trials of 2 epochs a night
    raw = deep_merge(read_profile("smoke"), read_profile("smoke")["cpu"])
    raw.pop("cpu")
    raw = deep_merge(raw, {
        "study": {"name": "tiny"},
        "data": {"train": str(Path(data.train.json_file).parent), "val": str(Path(data.val.json_file).parent), "synth": None},
        "pruner": {"name": "none"},
        "fixed": {"train.num_epochs": 2, "dataset.num_classes": 3},
        "budget": {"n_trials": 2},
        "devices": "cpu",
        "workspace": str(tmp_path / "ws"),
    })
    raw["nightly"] = {"evaluation": {"data": str(Path(holdout.val.json_file).parent)}, "warm_start": {"top_k": 1},
                      "budget": "20m", "timezone": "Europe/Berlin"}
    (tmp_path / "nightly.yaml").write_text(yaml.safe_dump(raw))
    cfg = build_nightly_config(raw, lambda r: build_run_config(r, use_cpu_variant=False, where="test"), "test")
    board = ProgressBoard(Console(file=open(os.devnull, "w")))

    first = run_night(cfg, board, night=dt.date(2026, 11, 24))
    assert first.status == "done", first
    assert first.trials == {"complete": 2}, first.trials
    assert first.data.staged_afresh == []  # local folders are used in place (S3: test_nightly.py)
    assert first.promoted and "no champion yet" in first.reason
    champ = current_champion(cfg.champion_dir)
    assert champ.study == "tiny-20261124" and champ.trial == first.best_trial
    # the held-out score is dino evaluate's on the holdout set, as its own files say
    metrics = json.loads((cfg.nightly_dir / "evaluations" / "tiny-20261124" / "candidate" / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["mAP50"] == pytest.approx(first.evaluation.candidate, abs=1e-4)
    assert metrics["split"] == "dataset.test_data_sources"
    onnx.checker.check_model(str(champ.onnx))  # a real ONNX export of the promoted checkpoint
    assert champ.checkpoint.stat().st_size > 100_000

    # night 2: one trial, the enqueued best of night 1, on a sampler seeded with night 1
    cfg = type(cfg)(cfg.run.model_copy(update={"budget": cfg.run.budget.model_copy(update={"n_trials": 1})}),
                    cfg.nightly)
    second = run_night(cfg, board, night=dt.date(2026, 11, 25))
    assert second.status == "done", second
    assert second.warm_start.from_studies == ["tiny-20261124"]
    best_first = optuna.load_study(study_name="tiny-20261124", storage=cfg.run.storage_url).best_trial
    assert second.warm_start.enqueued == [f"tiny-20261124#{best_first.number}"]
    study = optuna.load_study(study_name="tiny-20261125", storage=cfg.run.storage_url)
    own = [t for t in study.trials if attrs.SEEDED_FROM not in t.user_attrs]
    assert own[0].params == best_first.params and own[0].user_attrs[attrs.WARM_START_FROM]
    assert second.warm_start.seeded == 2 and len(study.trials) == 3 and second.trials == {"complete": 1}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # both scored on the same held-out set; the decision follows the numbers
    ev = second.evaluation
    assert ev.champion_name == champ.name and ev.candidate is not None and ev.champion is not None
    assert second.promoted == (ev.candidate > ev.champion)
    assert current_champion(cfg.champion_dir).study == ("tiny-20261125" if second.promoted else "tiny-20261124")
    if not second.promoted:  # the same parameters trained again: a tie or a loss keeps the champion
        assert "tie" in second.reason or "loses" in second.reason or "margin" in second.reason
    assert not (cfg.run.workspace / "tiny-20261125" / "best_model.onnx").exists()  # exported only when promoted

    assert [r.status for r in read_records(cfg.record_path)] == ["done", "done"]
    assert automl_main(["nightly", "history", "--config", str(tmp_path / "nightly.yaml")]) == 0
    table = capsys.readouterr().out
    assert "tiny-20261124" in table and "tiny-20261125" in table and "no champion yet" in table
