"""The nightly config: a run config plus a ``nightly:`` block, validated once at the edge.

``automl nightly --config nightly.yaml`` reads one YAML file: every key of a run config
(study, data, sampler, budget, ...) describes each night's study, and ``nightly:`` says how
nights follow one another::

    nightly:
      budget: 6h                # wall clock of the whole night (tuning + evaluation + promotion)
      reserve: 30m              # of it kept for evaluation, export and promotion
      timezone: Europe/Berlin   # whose date names the night's study (<study.name>-YYYYMMDD)
      warm_start: {top_k: 1, nights: 7, seed_sampler: true}
      evaluation: {data: s3://bucket/holdout, timeout: 30m}
      champion: {dir: /srv/models/dino, metric: test_mAP50, margin: 0.005, keep: 3}
      keep_nights: 3            # nights whose trial checkpoints are kept

Everything below receives a :class:`NightlyConfig`, never the raw mapping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from automl.config.durations import parse_duration
from automl.config.loader import format_validation_error
from automl.config.run_config import RunConfig
from automl.errors import ConfigError

Seconds = Annotated[float, BeforeValidator(lambda v: parse_duration(v, "duration"))]
DEFAULT_RESERVE_FRACTION = 0.2
MAX_DEFAULT_RESERVE_S = 1800.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarmStartSettings(_Strict):
    """Start tonight where the previous nights left off (same storage, same base name)."""

    top_k: int = Field(1, ge=0)  # best parameter sets of previous nights enqueued first; 0: none
    nights: int = Field(7, ge=1)  # how many previous nights are looked at
    # previous nights' finished trials added to tonight's study (add_trial) as the sampler's
    # history; measured to help (bench/nightly_warm_start.md)
    seed_sampler: bool = True


class EvaluationSettings(_Strict):
    """The fixed held-out set both the night's best and the champion are scored on."""

    data: str | None = None  # folder, archive or s3:// URI; default: data.val (else data.train)
    timeout: Seconds = 1800.0  # per evaluation job, when the night has no budget left to bound it


class ChampionSettings(_Strict):
    """The model in use, replaced only by a night's best that beats it."""

    dir: Path | None = None  # default <workspace>/nightly/<study.name>/champion
    metric: str | None = None  # kpi of `dino evaluate`; default test_<study metric without val_>
    margin: float = Field(0.0, ge=0)  # must win by more than this (metric units); a tie keeps the champion
    keep: int = Field(3, ge=1)  # champion versions kept on disk (the current one always)


class NightlySettings(_Strict):
    budget: Seconds | None = None  # wall clock of one night; None: the run's budget alone bounds it
    reserve: Seconds | None = None  # part of the budget kept for evaluation and promotion
    timezone: str | None = None  # IANA name; default: the machine's local time zone
    warm_start: WarmStartSettings = WarmStartSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    champion: ChampionSettings = ChampionSettings()
    keep_nights: int | None = Field(3, ge=1)  # nights whose trial checkpoints are kept; None: all

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            zone_info(name)
        return name

    @model_validator(mode="after")
    def _reserve_fits(self) -> NightlySettings:
        if self.budget is not None and self.reserve is not None and self.reserve >= self.budget:
            raise ValueError(f"reserve ({self.reserve:.0f} s) must be shorter than the budget ({self.budget:.0f} s)")
        if self.budget is None and self.reserve is not None:
            raise ValueError("reserve needs a budget: set nightly.budget (e.g. 6h) or drop reserve")
        return self

    def resolved_reserve(self, budget: float | None) -> float:
        """Seconds of ``budget`` kept after tuning: ``reserve``, else 20 % of the budget,
        at most 30 minutes. ValueError when the reserve leaves no time to tune."""
        if budget is None:
            return 0.0
        reserve = self.reserve if self.reserve is not None else min(DEFAULT_RESERVE_FRACTION * budget,
                                                                    MAX_DEFAULT_RESERVE_S)
        if reserve >= budget:
            raise ValueError(f"the night's reserve ({reserve:.0f} s) leaves nothing of its budget ({budget:.0f} s) "
                             "to tune: raise the budget or lower nightly.reserve")
        return reserve


def zone_info(name: str | None) -> dt.tzinfo:
    """The time zone ``name`` (IANA), or the machine's local zone for None."""
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin, "
                         "America/New_York or UTC") from None


def local_zone() -> dt.tzinfo:
    """The machine's zone with its DST rules: ``$TZ``, else where ``/etc/localtime`` points,
    else (no zone database entry) the current fixed UTC offset."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    fixed = dt.datetime.now().astimezone().tzinfo
    assert fixed is not None
    return fixed


def default_champion_metric(study_metric: str) -> str:
    """``val_mAP50`` -> ``test_mAP50``: the kpi ``dino evaluate`` (and TAO's) writes."""
    if study_metric.startswith("val_"):
        return "test_" + study_metric[len("val_"):]
    raise ValueError(f"cannot tell which `dino evaluate` kpi matches the study metric {study_metric!r}; "
                     "set nightly.champion.metric (e.g. test_mAP50)")


@dataclasses.dataclass(frozen=True)
class NightlyConfig:
    """One night's work: the study template (``run``, named ``<base>-YYYYMMDD`` each night)
    and how nights chain (``nightly``)."""

    run: RunConfig
    nightly: NightlySettings

    @property
    def base_name(self) -> str:
        return self.run.study.name

    @property
    def nightly_dir(self) -> Path:
        """``<workspace>/nightly/<base>``: the run record, the lock, evaluations, the page."""
        return self.run.workspace / "nightly" / self.base_name

    @property
    def record_path(self) -> Path:
        return self.nightly_dir / "runs.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.nightly_dir / "night.lock"

    @property
    def champion_dir(self) -> Path:
        return self.nightly.champion.dir or self.nightly_dir / "champion"

    @property
    def champion_metric(self) -> str:
        return self.nightly.champion.metric or default_champion_metric(self.run.metric.name)

    @property
    def maximize(self) -> bool:
        return self.run.metric.resolved_direction() == "maximize"

    @property
    def tz(self) -> dt.tzinfo:
        return zone_info(self.nightly.timezone)

    def night_study_name(self, night: dt.date) -> str:
        return night_study_name(self.base_name, night)

    def for_night(self, night: dt.date) -> RunConfig:
        """The run config of ``night``'s study."""
        study = self.run.study.model_copy(update={"name": self.night_study_name(night)})
        return self.run.model_copy(update={"study": study})


def night_study_name(base: str, night: dt.date) -> str:
    return f"{base}-{night:%Y%m%d}"


def build_nightly_config(raw: dict[str, Any], build_run: Callable[[dict[str, Any]], RunConfig],
                         where: str) -> NightlyConfig:
    """Split ``nightly:`` off ``raw``, validate it, and build the run config from the rest
    with ``build_run`` (the CLI's, which applies flags and the CPU variant)."""
    raw = dict(raw)
    block = raw.pop("nightly", None) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"invalid nightly config ({where}): nightly must be a mapping, got {type(block).__name__}")
    try:
        settings = NightlySettings.model_validate(block)
    except ValidationError as exc:
        text = format_validation_error(exc, where).replace("invalid run config", "invalid nightly config")
        raise ConfigError(text.replace("\n  ", "\n  nightly.")) from None
    cfg = NightlyConfig(build_run(raw), settings)
    try:
        cfg.champion_metric  # noqa: B018 - validated now, not after a night of tuning
    except ValueError as exc:
        raise ConfigError(f"invalid nightly config ({where}): {exc}") from None
    return cfg
