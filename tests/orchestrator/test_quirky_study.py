"""``automl run`` on the quirky-dataset generator (tests/quirky_data.py) with the real
trainer: preflight reports the data policy's fixes, the trial trains, and every target
the trial's model was given is the box a person sees in the image. A set the policy
refuses stops the run before any trial exists."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from quirky_data import IDENTITY_AUGMENTATION, NUM_CLASSES, QuirkySplit, truth_after_transforms, write_quirky_split

from automl.cli import main

TINY = {
    "model.backbone": "resnet_tiny", "model.hidden_dim": 64, "model.dim_feedforward": 128, "model.nheads": 4,
    "model.enc_layers": 1, "model.dec_layers": 2, "model.num_queries": 20, "model.num_select": 20,
    "model.dn_number": 5, "model.num_feature_levels": 3, "model.return_interm_indices": [1, 2, 3],
    "train.precision": "fp32", "train.checkpoint_interval": 1, "train.validation_interval": 1,
    "dataset.batch_size": 4, "dataset.workers": 0,
}  # fmt: skip


def run_config(tmp_path: Path, train: QuirkySplit, val: QuirkySplit, name: str) -> Path:
    fixed = {**TINY, **{f"dataset.augmentation.{k}": v for k, v in IDENTITY_AUGMENTATION.items()},
             "train.num_epochs": 1, "dataset.num_classes": NUM_CLASSES}
    cfg = {
        "study": {"name": name},
        "metric": {"name": "val_mAP50", "extractor": "tao_status"},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1, "max_consecutive_failures": 1},
        "trainer": {"space": "search_spaces/dino/smoke_cpu_space.yaml"},
        "data": {"train": str(train.root), "val": str(val.root)},
        "fixed": fixed,
        "export": {"enabled": False},
        "devices": "cpu",
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow  # one real trial of the tiny model on the CPU (~40 s on a busy 2-core box)
def test_automl_run_trains_on_the_boxes_a_person_sees(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    record = tmp_path / "targets.jsonl"
    monkeypatch.setenv("DINO_RECORD_TARGETS", str(record))  # inherited by the trial's process
    train = write_quirky_split(tmp_path / "data" / "train", n_plain=7)
    val = write_quirky_split(tmp_path / "data" / "val", n_plain=3, seed=1)
    rc = main(["run", "--config", str(run_config(tmp_path, train, val, "quirky"))])
    out = capsys.readouterr()
    assert rc == 0, out.out[-4000:] + out.err[-4000:]
    # preflight showed the policy's fixes (a table, wrapped to the console) before the trial started
    assert "0 error(s), 8 warning(s)." in out.out and "'exif6.jpg'" in out.out and "'half.png'" in out.out

    study = optuna.load_study(study_name="quirky", storage=f"sqlite:///{tmp_path / 'ws' / 'study.db'}")
    (trial,) = study.trials
    assert trial.state is TrialState.COMPLETE, trial.user_attrs
    log = next((tmp_path / "ws" / "quirky").glob("trial_*/stdout.log")).read_text()
    # the trainer logged the same findings, whole lines: what, where (file, image id, annotation id)
    head = f"Data policy, dataset.train_data_sources[0] ({train.json_file}): "
    zero_id = train.annotation_ids["zero.png"][1]
    assert f"{head}1 box has zero or negative width or height: dropped (annotations[{zero_id - 1000}] (id {zero_id}, " \
           f"image id {train.ids['zero.png']}): bbox [50.0, 50.0, 0.0, 0.0])" in log
    assert f"{head}1 image is a constant ratio of its size in the annotations" in log

    records = [json.loads(line) for line in record.read_text().splitlines()]
    for split_name, split in (("train", train), ("val", val)):
        seen = [r for r in records if r["split"] == split_name]
        assert sorted(r["image_id"] for r in seen) == sorted(split.ids.values()), split_name
        truth = split.truth_by_id()
        for r in seen:
            want = truth_after_transforms(truth[r["image_id"]], (r["size"][0], r["size"][1]))
            assert r["labels"] == [c for c, _ in want]
            for got, (_, box) in zip(r["boxes"], want, strict=True):
                assert got == pytest.approx(box, abs=1e-5), (r["image_id"], got, box)


def test_automl_run_refuses_an_inconsistent_set_before_any_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    train = write_quirky_split(tmp_path / "data" / "train", inconsistent=True)
    val = write_quirky_split(tmp_path / "data" / "val", n_plain=3, seed=1)
    rc = main(["run", "--config", str(run_config(tmp_path, train, val, "odd"))])
    out = capsys.readouterr()
    assert rc != 0
    assert "preflight found errors" in out.err
    assert "1 error(s)" in out.out and "'odd.png'" in out.out  # the preflight table (wrapped)
    assert not list((tmp_path / "ws").glob("odd/trial_*"))
    db = tmp_path / "ws" / "study.db"
    if db.exists():  # the storage may exist, but it holds no trial
        names = optuna.get_all_study_names(storage=f"sqlite:///{db}")
        assert all(not optuna.load_study(study_name=n, storage=f"sqlite:///{db}").trials for n in names)
