"""Data for a study, ready before the first trial: generate or stage, then preflight.

Produces the spec assignments every trial shares (data sources, ``num_classes`` when
the user left it unset) and the paths a container mounts read-only. Preflight errors
stop the run here, before any GPU time is spent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from automl.config.run_config import RunConfig, SynthSettings
from automl.datasets.findings import has_errors
from automl.datasets.locks import file_lock
from automl.datasets.preflight import SpecFacts, preflight
from automl.datasets.staging import StagedSplit, stage_sources
from automl.errors import DatasetError
from automl.search_space.dotted import get_path, parse_path
from automl.study.events import Findings, Note, Observer


@dataclasses.dataclass(frozen=True)
class PreparedData:
    assignments: dict[str, Any]  # dotted spec path -> value
    read_only_paths: tuple[Path, ...]
    train: StagedSplit
    val: StagedSplit


def _synth_dir(cfg: RunConfig, synth: SynthSettings) -> Path:
    key = hashlib.sha1(json.dumps(synth.model_dump(), sort_keys=True).encode()).hexdigest()[:10]
    return (cfg.workspace / "datasets" / f"synth_{key}").resolve()


def generate_synth(cfg: RunConfig, synth: SynthSettings, emit: Observer) -> tuple[Path, Path]:
    """Generate the dataset once per settings; concurrent workers wait on a lock."""
    from dino.data.synth import generate_dataset

    out = _synth_dir(cfg, synth)
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.with_suffix(".lock"), what=f"the generated dataset {out}"):
        if not (out / ".complete").exists():
            emit(Note(f"generating {synth.num_images} images of {synth.num_classes} shape classes in {out}"))
            generate_dataset(
                out_dir=str(out), num_images=synth.num_images, num_classes=synth.num_classes,
                image_size=synth.image_size, seed=synth.seed, val_fraction=synth.val_fraction, archive=False,
                objects=synth.objects, object_size=synth.object_size, class_colours=synth.class_colours,
            )
            (out / ".complete").write_text("ok\n")
    return out / "train", out / "val"


def _spec_value(cfg: RunConfig, template: dict[str, Any], dotted: str) -> Any:
    if dotted in cfg.fixed:
        return cfg.fixed[dotted]
    return get_path(template, parse_path(dotted), None)


def max_category_id(split: StagedSplit) -> int:
    data = json.loads(Path(split.json_file).read_text())
    return max((int(c["id"]) for c in data.get("categories", [])), default=0)


def prepare_data(cfg: RunConfig, template: dict[str, Any], emit: Observer) -> PreparedData:
    cache = (cfg.data.cache_dir or cfg.workspace / "cache").resolve()
    train_src: str | Path | None
    val_src: str | Path | None
    if cfg.data.synth is not None:
        train_src, val_src = generate_synth(cfg, cfg.data.synth, emit)
    else:
        train_src, val_src = cfg.data.train, cfg.data.val
    staged = stage_sources(str(train_src), None if val_src is None else str(val_src), cache)
    train, val = staged.train, staged.val  # no val source: train is reused (preflight warns)

    assignments: dict[str, Any] = {
        "dataset.train_data_sources": [{"image_dir": str(train.image_dir), "json_file": str(train.json_file)}],
        "dataset.val_data_sources": [{"image_dir": str(val.image_dir), "json_file": str(val.json_file)}],
    }
    if "dataset.num_classes" not in cfg.fixed:
        num_classes = max(max_category_id(train), max_category_id(val)) + 1
        assignments["dataset.num_classes"] = num_classes
        emit(Note(f"dataset.num_classes = {num_classes} (largest category id + 1; fix it with "
                  "fixed: {dataset.num_classes: N})"))

    def value(dotted: str) -> Any:
        return assignments.get(dotted, _spec_value(cfg, template, dotted))

    facts = SpecFacts(
        num_classes=int(value("dataset.num_classes")),
        batch_size=int(value("dataset.batch_size")),
        num_gpus=cfg.trainer.num_gpus,
        gpu_ids=tuple(range(cfg.trainer.num_gpus)),  # what each trial's spec sets
        num_queries=int(value("model.num_queries")),
        num_select=int(value("model.num_select")),
        num_feature_levels=int(value("model.num_feature_levels")),
        return_interm_indices=tuple(value("model.return_interm_indices")),
    )
    findings = preflight(train, None if staged.val_is_train else val, facts, sample_limit=cfg.data.preflight_sample,
                         strict=cfg.data.strict)
    if findings:
        emit(Findings(tuple(findings)))
    if has_errors(findings):
        raise DatasetError("preflight found errors (table above); fix them before spending GPU time")
    paths = {Path(train.image_dir), Path(train.json_file), Path(val.image_dir), Path(val.json_file)}
    return PreparedData(assignments, tuple(sorted(paths)), train, val)
