"""The run config: one YAML document validated into typed models, once, at the edge.

Everything below ``automl.cli`` receives a :class:`RunConfig`, never a raw dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Metric names whose larger values are better; anything ending in "loss" is minimised.
_MAXIMIZED_PREFIXES = ("val_map", "map", "ap", "val_ap", "accuracy", "val_acc", "f1", "recall", "precision")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySettings(_Strict):
    name: str = "dino"
    storage: str | None = None  # default: sqlite:///<workspace>/study.db
    heartbeat_interval: int = Field(30, ge=1)  # seconds between a running trial's heartbeats
    grace_period: int | None = Field(None, ge=2)  # stale after this; default 4 x heartbeat
    max_retry: int = Field(3, ge=0)  # how often a stale or interrupted trial is retried


class MetricSettings(_Strict):
    name: str = "val_mAP50"
    direction: Literal["maximize", "minimize"] | None = None  # inferred from the name
    extractor: str = "tao_status"  # registry name or dotted path of a user extractor
    extractor_options: dict[str, Any] = Field(default_factory=dict)
    aggregate: Literal["best", "last"] = "best"  # which epoch's value is the trial's value

    def resolved_direction(self) -> str:
        if self.direction:
            return self.direction
        low = self.name.lower()
        if low.endswith("loss") or "error" in low:
            return "minimize"
        if low.startswith(_MAXIMIZED_PREFIXES):
            return "maximize"
        raise ValueError(
            f"cannot infer whether metric {self.name!r} is maximised or minimised; "
            "set metric.direction to 'maximize' or 'minimize'"
        )


class SamplerSettings(_Strict):
    name: Literal["tpe", "gp", "random", "cmaes"] = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = Field(None, ge=0)  # random trials before the model kicks in
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler


class PrunerSettings(_Strict):
    """Epoch-level pruning. Defaults come from measured curves: epoch 1 is noise and
    single curves dip by 0.1-0.3 between epochs, so nothing is pruned before
    ``warmup_epochs`` validations and a trial is judged by its best value so far."""

    name: Literal[
        "median", "percentile", "successive_halving", "hyperband", "patient", "threshold", "none"
    ] = "median"
    warmup_epochs: int = Field(2, ge=0)  # validations reported before any pruning decision
    startup_trials: int = Field(1, ge=0)  # finished trials needed before pruning others
    percentile: float = Field(50.0, gt=0, lt=100)
    patience: int = Field(2, ge=0)  # for "patient": epochs without improvement tolerated
    min_delta: float = 0.0
    lower: float | None = None  # for "threshold"
    upper: float | None = None
    reduction_factor: int = Field(3, ge=2)  # successive halving / hyperband
    options: dict[str, Any] = Field(default_factory=dict)


class LauncherSettings(_Strict):
    name: str = "local"  # local | docker
    grace_period: float = Field(10.0, ge=0)  # SIGTERM -> SIGKILL, seconds
    poll_interval: float = Field(1.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)  # e.g. docker image, shm_size


class TrainerSettings(_Strict):
    """How trials are run: the trainer's CLI, its schema, the spec template and the space."""

    command: list[str] = Field(default_factory=lambda: ["dino", "train"])
    schema_path: Path | None = Field(None, alias="schema")  # default: search_spaces/dino/train.schema.json
    template: Path | None = None  # default: search_spaces/dino/spec_template_train.yaml
    space: Path | None = None  # curated default space unless given
    num_gpus: int = Field(1, ge=1)  # devices per trial (train.num_gpus)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SynthSettings(_Strict):
    """A generated dataset (the smoke profile's stand-in for a private bucket)."""

    num_images: int = Field(200, ge=2)
    num_classes: int = Field(4, ge=1)
    image_size: int = Field(256, ge=32)
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)


class DataSettings(_Strict):
    train: str | None = None  # local folder, local archive or s3:// URI
    val: str | None = None  # missing: the training source is reused, with a warning
    synth: SynthSettings | None = None
    cache_dir: Path | None = None  # default <workspace>/cache
    preflight_sample: int = Field(500, ge=1)  # images opened by preflight on large sets

    @model_validator(mode="after")
    def _one_source(self) -> "DataSettings":
        if self.train is None and self.synth is None:
            raise ValueError("set data.train (folder, archive or s3:// URI) or data.synth")
        if self.train is not None and self.synth is not None:
            raise ValueError("set only one of data.train and data.synth")
        return self


class BudgetSettings(_Strict):
    n_trials: int | None = Field(10, ge=1)  # finished trials in the study, across restarts
    timeout_s: float | None = Field(None, gt=0)
    max_consecutive_failures: int = Field(3, ge=1)


class RetentionSettings(_Strict):
    keep_checkpoints_of_best: int | None = Field(3, ge=1)  # None keeps every checkpoint


class ExportSettings(_Strict):
    """Export the best trial's checkpoint (``dino export``: ONNX) when the study ends."""

    enabled: bool = True
    timeout_s: float = Field(1800.0, gt=0)


class RunConfig(_Strict):
    study: StudySettings = StudySettings()
    metric: MetricSettings = MetricSettings()
    sampler: SamplerSettings = SamplerSettings()
    pruner: PrunerSettings = PrunerSettings()
    launcher: LauncherSettings = LauncherSettings()
    trainer: TrainerSettings = TrainerSettings()
    data: DataSettings
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted spec path -> value, every trial
    budget: BudgetSettings = BudgetSettings()
    retention: RetentionSettings = RetentionSettings()
    export: ExportSettings = ExportSettings()
    devices: Literal["auto", "cpu"] | list[int] = "auto"
    cpu_parallel: int = Field(1, ge=1)  # concurrent trials when running on the CPU
    workspace: Path = Path("automl_workspace")

    @field_validator("metric")
    @classmethod
    def _direction_known(cls, metric: MetricSettings) -> MetricSettings:
        metric.resolved_direction()
        return metric

    @property
    def storage_url(self) -> str:
        return self.study.storage or f"sqlite:///{(self.workspace / 'study.db').resolve()}"

    @property
    def study_dir(self) -> Path:
        return self.workspace / self.study.name
