"""A short study of the real DINO trainer on data behind a real S3-compatible server
(moto's HTTP server on 127.0.0.1): staging from s3:// URIs, preflight, trials, a best
spec that points at the staged data."""

import json
import os
from pathlib import Path

import boto3
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from automl.config import build_run_config, read_profile
from automl.config.loader import deep_merge
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard


@pytest.mark.slow
def test_study_from_s3_uris_with_the_real_trainer(tmp_path, aws_env):
    from dino.data.synth import generate_dataset

    # one big shape per image: the tiny model scores above zero within 2 epochs (see trained_shapes)
    data = generate_dataset(out_dir=tmp_path / "synth", num_images=96, num_classes=2, image_size=64, seed=11,
                            val_fraction=0.25, archive=True, objects=(1, 1), object_size=(0.3, 0.6))
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="dino-data")
    for split, prefix in ((data.train, "shapes/train"), (data.val, "shapes/val")):
        s3.upload_file(str(split.archive), "dino-data", f"{prefix}/images.tar.gz")
        s3.upload_file(str(split.json_file), "dino-data", f"{prefix}/annotations.json")

    # the smoke profile's CPU variant, smaller still: 2 trials of 2 epochs, pruning off (a
    # sampled 2-epoch trial may fairly be judged not learning; staging is what is tested here)
    raw = deep_merge(read_profile("smoke"), read_profile("smoke")["cpu"])
    raw.pop("cpu")
    raw = deep_merge(raw, {
        "study": {"name": "s3-study"},
        "data": {"train": "s3://dino-data/shapes/train", "val": "s3://dino-data/shapes/val", "synth": None},
        "fixed": {"train.num_epochs": 2, "dataset.num_classes": 3},
        "budget": {"n_trials": 2},
        "pruner": {"name": "none"},
        "devices": "cpu",
        "workspace": str(tmp_path / "ws"),
    })
    cfg = build_run_config(raw, use_cpu_variant=False, where="test")
    open_study(cfg).enqueue_trial({"train.optim.lr": 0.002})  # a rate that learns in 2 epochs; trial 1 is sampled
    outcome = run_study(cfg, ProgressBoard(Console(file=open(os.devnull, "w"))))

    study = optuna.load_study(study_name="s3-study", storage=cfg.storage_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE], \
        [t.user_attrs.get("failure") for t in study.trials]
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials)
    # what the study recorded is what the trainer wrote: every epoch's val_mAP50 of its status.json
    for t in study.trials:
        status = [json.loads(line) for line in (Path(t.user_attrs["results_dir"]) / "train" / "status.json")
                  .read_text().splitlines() if line.strip()]
        written = {line["epoch"]: float(line["kpi"]["val_mAP50"]) for line in status if "epoch" in line}
        assert t.intermediate_values == written, (t.number, t.intermediate_values, written)
        assert t.value == max(written.values())
    assert any(v > 0 for t in study.trials for v in t.intermediate_values.values()), \
        "precondition: some epoch scored above zero, so the comparison can tell values apart"
    spec = yaml.safe_load(Path(outcome.best_spec).read_text())
    train_source = spec["dataset"]["train_data_sources"][0]
    # the trials read the staged copy: the archive's images/ folder in the workspace cache
    assert Path(train_source["image_dir"]).name == "images"
    assert str(tmp_path / "ws" / "cache") in train_source["image_dir"]
    assert len(list(Path(train_source["image_dir"]).iterdir())) == data.train.num_images
    assert outcome.best_checkpoint is not None and outcome.best_checkpoint.exists()
    # the checkpoint handed back is the one of the epoch the best value comes from
    best = json.loads((tmp_path / "ws" / "s3-study" / "best.json").read_text())
    assert best["checkpoint_is_value_epoch"] and best["checkpoint"] == str(outcome.best_checkpoint)
    assert best["value_epoch"] == min(e for e, v in study.best_trial.intermediate_values.items()
                                      if v == study.best_value)
    # the best checkpoint is exported through the same launcher (dino export: ONNX)
    assert outcome.exported_model == tmp_path / "ws" / "s3-study" / "best_model.onnx"
    assert outcome.exported_model.stat().st_size > 10_000
    assert f"export.checkpoint={outcome.best_checkpoint}" in outcome.exported_model.with_suffix(".log").read_text()
