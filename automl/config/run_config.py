"""The run config: one YAML document validated into typed models, once, at the edge.

Everything below ``automl.cli`` receives a :class:`RunConfig`, never a raw dict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

from automl.config.storage import DEFAULT_WORKSPACE, parse_storage_url, resolve_storage_url
from automl.launchers import LAUNCHERS
from automl.observe.extractors import EXTRACTORS, check_metric_name, get_extractor
from automl.plugins import PluginFamily
from automl.tuning import PRUNERS, SAMPLERS
from automl.tuning.pruners import PrunerOptions
from dino.data import synth

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

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        """Parsed once here: a bad URL or a missing driver fails before anything is staged."""
        return None if value is None else parse_storage_url(value, "study.storage")


class _PluginChoice(_Strict):
    """A plugin picked by ``name``, with its options validated by that plugin's own model
    (:mod:`automl.plugins`): a key the plugin does not take is an error naming it."""

    family: ClassVar[PluginFamily[Any]]
    default: ClassVar[str]
    name: str
    options: SerializeAsAny[BaseModel]

    @classmethod
    def _choose(cls, name: Any, options: Any) -> dict[str, Any]:
        name = cls.default if name is None else name
        return {"name": name, "options": cls.family.validate(name, options or {})}


class _FlatPluginChoice(_PluginChoice):
    """``{name: X, <X's options>...}``: the keys beside ``name`` are the plugin's options."""

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or isinstance(data.get("options"), BaseModel):
            return data
        options = dict(data)
        name = options.pop("name", None)
        return cls._choose(name, options)


class SamplerSettings(_FlatPluginChoice):
    """``sampler: {name: tpe, seed: 0, n_startup_trials: 4}``; see :mod:`automl.tuning.samplers`."""

    family: ClassVar[PluginFamily[Any]] = SAMPLERS
    default: ClassVar[str] = "tpe"


class PrunerSettings(_FlatPluginChoice):
    """``pruner: {name: median, warmup_epochs: 2, startup_trials: 1}``; see
    :mod:`automl.tuning.pruners` (each pruner's settings model lists what it takes)."""

    family: ClassVar[PluginFamily[Any]] = PRUNERS
    default: ClassVar[str] = "median"


class MetricSettings(_Strict):
    name: str = "val_mAP50"
    direction: Literal["maximize", "minimize"] | None = None  # inferred from the name
    extractor: str = "tao_status"  # registry name or module:attr of a user extractor
    extractor_options: SerializeAsAny[BaseModel]  # validated by the extractor
    aggregate: Literal["best", "last"] = "best"  # which epoch's value is the trial's value

    @model_validator(mode="before")
    @classmethod
    def _extractor_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or isinstance(data.get("extractor_options"), BaseModel):
            return data
        data = dict(data)
        name = data.get("extractor", "tao_status")
        options = EXTRACTORS.validate(name, data.get("extractor_options") or {})
        extractor = get_extractor(name, options)  # built once now: a bad pattern fails here, not in a trial
        check_metric_name(extractor, data.get("name", "val_mAP50"), name)
        data["extractor_options"] = options
        return data

    def resolved_direction(self) -> Literal["maximize", "minimize"]:
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


class LauncherSettings(_PluginChoice):
    """``launcher: {name: docker, options: {image: ..., shm_size: 16g}}``: how jobs start;
    ``options`` are checked by the launcher (:mod:`automl.launchers`)."""

    family: ClassVar[PluginFamily[Any]] = LAUNCHERS
    default: ClassVar[str] = "local"
    grace_period: float = Field(10.0, ge=0)  # SIGTERM -> SIGKILL, seconds (interrupts: checkpoint kept)
    # a pruned job's checkpoint is never resumed, so it gets less time and its GPU is soon
    # free: the trainer stops within a step; the rest is interpreter teardown (1-6 s measured)
    prune_grace_period: float = Field(2.0, ge=0)
    poll_interval: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _launcher_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or isinstance(data.get("options"), BaseModel):
            return data
        data = dict(data)
        data.update(cls._choose(data.get("name"), data.get("options")))
        return data


class TrainerSettings(_Strict):
    """How trials are run: the trainer's CLI, its schema, the spec template and the space."""

    command: list[str] = Field(default_factory=lambda: ["dino", "train"])
    schema_path: Path | None = Field(None, alias="schema")  # default: search_spaces/dino/train.schema.json
    template: Path | None = None  # default: search_spaces/dino/spec_template_train.yaml
    space: Path | None = None  # curated default space unless given
    num_gpus: int = Field(1, ge=1)  # devices per trial (train.num_gpus)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def warm_program(self) -> tuple[str, ...] | None:
        """The program part of ``command`` when it is the bundled trainer's ``train``
        (``dino train``, ``python -m dino train``), which can be started ahead of its job
        (``dino warm``); None for any other trainer."""
        *program, task = self.command
        if task != "train" or not program:
            return None
        if os.path.basename(program[-1]) == "dino" or program[-2:] == ["-m", "dino"]:
            return tuple(program)
        return None


class DeviceSettings(_Strict):
    """``devices:`` which devices trials run on, and how many trials share one slot.

    ``devices: auto | cpu | [0, 1]`` is short for ``{use: ...}`` with one trial per slot.
    A slot is ``trainer.num_gpus`` GPUs (or the CPU); ``trials_per_slot`` trials run on
    each at once, every one with the slot's devices. ``auto`` decides from the first
    measured peak GPU memory (see :mod:`automl.study.packing`); on the CPU it gives each
    trial ``min_cores_per_trial`` cores.
    """

    use: Literal["auto", "cpu"] | list[int] = "auto"  # auto: every GPU nvidia-smi lists, else the CPU
    trials_per_slot: int | Literal["auto"] = 1
    max_trials_per_slot: int = Field(4, ge=1)  # auto's ceiling
    memory_margin: float = Field(0.1, ge=0, lt=1)  # auto: fraction of each card left free
    min_cores_per_trial: int = Field(2, ge=1)  # auto: CPU cores each concurrent trial keeps
    gpu_memory_mib: int | None = Field(None, gt=0)  # the card's memory when nvidia-smi cannot tell

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, (str, list)):
            return {"use": data}
        return data

    @field_validator("use", mode="before")
    @classmethod
    def _which(cls, value: Any) -> Any:
        if value in ("auto", "cpu") or (isinstance(value, list) and value
                                        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in value)):
            return value
        raise ValueError(f"expected auto, cpu or a list of GPU indices like [0, 1], got {value!r}")

    @field_validator("trials_per_slot", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"expected a number of trials (1 or more) or 'auto', got {value!r}")


class SynthSettings(_Strict):
    """A generated dataset (the smoke profile's stand-in for a private bucket)."""

    num_images: int = Field(200, ge=2)
    num_classes: int = Field(4, ge=1)
    image_size: int = Field(256, ge=32)
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)
    objects: tuple[int, int] = synth.OBJECTS  # min, max objects per image
    object_size: tuple[float, float] = synth.OBJECT_SIZE  # an object's side, as a fraction of image_size
    class_colours: bool = False  # each class also has its own hue (the CPU smoke's learnable task)

    @model_validator(mode="after")
    def _layout(self) -> SynthSettings:
        problem = synth.layout_problem(self.objects, self.object_size)
        if problem:
            raise ValueError(problem)
        return self


class DataSettings(_Strict):
    train: str | None = None  # local folder, local archive or s3:// URI
    val: str | None = None  # missing: the training source is reused, with a warning
    synth: SynthSettings | None = None
    cache_dir: Path | None = None  # default <workspace>/cache
    preflight_sample: int = Field(500, ge=1)  # images opened by preflight on large sets
    strict: bool = False  # every data-policy fix is a preflight error (dino/data/policy.py)

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        if self.train is None and self.synth is None:
            raise ValueError("set data.train (folder, archive or s3:// URI) or data.synth")
        if self.train is not None and self.synth is not None:
            raise ValueError("set only one of data.train and data.synth")
        return self


class BudgetSettings(_Strict):
    """What a study and each of its trials may spend."""

    n_trials: int | None = Field(10, ge=1)  # trials in the study, all workers and restarts (exact)
    timeout_s: float | None = Field(None, gt=0)  # no new trial starts after this (this run)
    max_consecutive_failures: int = Field(3, ge=1)
    trial_timeout_s: float | None = Field(None, gt=0)  # one attempt of a trial; stopped and failed after it
    stall_timeout_s: float | None = Field(1800.0, gt=0)  # no new log bytes this long: a hung trial, stopped


class RetentionSettings(_Strict):
    keep_checkpoints_of_best: int | None = Field(3, ge=1)  # None keeps every checkpoint


class ExportSettings(_Strict):
    """Export the best trial's checkpoint (``dino export``: ONNX) when the study ends."""

    enabled: bool = True
    timeout_s: float = Field(1800.0, gt=0)


class ReportSettings(_Strict):
    """The report written after each run: ``predictions`` validation images drawn with the
    best trial's detections (score >= ``conf_threshold``) beside their ground truth; 0 skips
    the pictures (and their inference job)."""

    predictions: int = Field(4, ge=0, le=32)
    conf_threshold: float = Field(0.3, ge=0, le=1)
    timeout_s: float = Field(900.0, gt=0)  # the inference job's limit


class RunConfig(_Strict):
    study: StudySettings = StudySettings()
    metric: MetricSettings = Field(default_factory=lambda: MetricSettings.model_validate({}))
    sampler: SamplerSettings = Field(default_factory=lambda: SamplerSettings.model_validate({}))
    pruner: PrunerSettings = Field(default_factory=lambda: PrunerSettings.model_validate({}))
    launcher: LauncherSettings = Field(default_factory=lambda: LauncherSettings.model_validate({}))
    trainer: TrainerSettings = TrainerSettings()
    data: DataSettings
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted spec path -> value, every trial
    budget: BudgetSettings = BudgetSettings()
    retention: RetentionSettings = RetentionSettings()
    export: ExportSettings = ExportSettings()
    report: ReportSettings = ReportSettings()
    devices: DeviceSettings = DeviceSettings()
    workspace: Path = DEFAULT_WORKSPACE

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "cpu_parallel" in data:
            raise ValueError(
                f"cpu_parallel is now devices.trials_per_slot (concurrency belongs to the device slots): "
                f"write `devices: {{use: cpu, trials_per_slot: {data['cpu_parallel']}}}`"
            )
        return data

    @field_validator("pruner")
    @classmethod
    def _pruner_fits_the_metric(cls, pruner: PrunerSettings, info: ValidationInfo) -> PrunerSettings:
        metric = info.data.get("metric")
        if isinstance(pruner.options, PrunerOptions) and isinstance(metric, MetricSettings):
            try:
                pruner.options.check_direction(metric.resolved_direction())
            except ValueError as exc:
                raise ValueError(f"{exc} (metric {metric.name!r} is {metric.resolved_direction()}d)") from None
        return pruner

    @field_validator("metric")
    @classmethod
    def _direction_known(cls, metric: MetricSettings) -> MetricSettings:
        metric.resolved_direction()
        return metric

    @model_validator(mode="after")
    def _stall_longer_than_polls(self) -> RunConfig:
        """A stall is judged on the launcher's polls: a limit within a few of them would
        stop healthy jobs between two looks at their log."""
        stall, poll = self.budget.stall_timeout_s, self.launcher.poll_interval
        if stall is not None and stall < 5 * poll:
            raise ValueError(f"budget.stall_timeout_s ({stall:g} s) must be at least 5 x launcher.poll_interval "
                             f"({poll:g} s): the job's log is looked at once per poll")
        return self

    @property
    def storage_url(self) -> str:
        """The URL to open (it may hold a password: show it with ``redact_url``)."""
        return resolve_storage_url(self.study.storage, self.workspace)

    @property
    def study_dir(self) -> Path:
        return self.workspace / self.study.name
