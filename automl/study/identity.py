"""What a study optimises is fixed when it is created: the metric, its direction and
which epoch's value is a trial's value (``metric.aggregate``).

Every trial's value, the pruner's comparisons, the best trial and checkpoint retention
rank by these, so a rerun that changes one of them would silently mix incomparable
values (a val_loss "maximised" because the study was created for val_mAP50, and
retention deleting the checkpoints of the trial that is actually best). The first run
records them on the study; a later run that asks for others is refused, naming a study
name to use instead.
"""

from __future__ import annotations

import dataclasses

import optuna
from optuna.study import StudyDirection

from automl.config.run_config import RunConfig
from automl.config.storage import redact_url
from automl.errors import ConfigError
from automl.study import attrs


@dataclasses.dataclass(frozen=True)
class StudyIdentity:
    metric: str
    direction: str  # "maximize" | "minimize"
    aggregate: str  # "best" | "last"

    @classmethod
    def of_config(cls, cfg: RunConfig) -> StudyIdentity:
        return cls(cfg.metric.name, cfg.metric.resolved_direction(), cfg.metric.aggregate)

    @classmethod
    def recorded(cls, study: optuna.Study) -> StudyIdentity:
        """What ``study`` was created for; a study created before these attributes
        existed has only a metric (or none), its direction and aggregate ``best``."""
        user = study.user_attrs
        direction = "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
        return cls(str(user.get(attrs.STUDY_METRIC, "")), direction, str(user.get(attrs.STUDY_AGGREGATE, "")))

    def describe(self) -> str:
        return f"{self.direction} {self.metric} (metric.aggregate {self.aggregate})"


def differences(recorded: StudyIdentity, wanted: StudyIdentity) -> list[str]:
    """The settings in which ``wanted`` differs from what the study recorded (a setting
    the study has no record of yet differs from nothing)."""
    out = []
    if recorded.metric and recorded.metric != wanted.metric:
        out.append(f"metric.name {recorded.metric!r} -> {wanted.metric!r}")
    if recorded.direction != wanted.direction:
        out.append(f"direction {recorded.direction} -> {wanted.direction}")
    if recorded.aggregate and recorded.aggregate != wanted.aggregate:
        out.append(f"metric.aggregate {recorded.aggregate!r} -> {wanted.aggregate!r}")
    return out


def fix_identity(study: optuna.Study, cfg: RunConfig) -> StudyIdentity:
    """Record this run's metric on a new study, or refuse one that differs from what the
    study was created for. Returns the study's identity."""
    wanted = StudyIdentity.of_config(cfg)
    recorded = StudyIdentity.recorded(study)
    changed = differences(recorded, wanted)
    if changed:
        if recorded.metric == wanted.metric and recorded.aggregate == wanted.aggregate:
            new_name = f"{cfg.study.name}-{wanted.direction}"
        else:
            new_name = f"{cfg.study.name}-{wanted.metric}"
        raise ConfigError(
            f"study {cfg.study.name!r} in {redact_url(cfg.storage_url)} was created to {recorded.describe()}; "
            f"this run asks to {wanted.describe()} ({'; '.join(changed)}). A study's metric and direction are fixed "
            "when it is created: its trials' values, the pruner and checkpoint retention all rank by them. Start a new "
            f"study for the new metric (e.g. --study-name {new_name}), or set metric back to what the study uses."
        )
    if not recorded.metric:
        study.set_user_attr(attrs.STUDY_METRIC, wanted.metric)
    if not recorded.aggregate:
        study.set_user_attr(attrs.STUDY_AGGREGATE, wanted.aggregate)
    return wanted
