"""Run a study from a RunConfig: the orchestration of one ``automl run``.

Renders the trial template once (a bad spec fails in seconds), stages and checks the
data (before any GPU time), builds the search space, opens the study on RDB storage
with heartbeats, recovers what dead workers left, then runs ``study.optimize`` with one
thread per device slot, and finally writes the best spec, the report and applies
checkpoint retention. What happens is told to an observer as events
(:mod:`automl.study.events`); nothing here prints.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from automl.config.run_config import RunConfig
from automl.config.storage import storage_error
from automl.datasets.prepare import PreparedData, prepare_data
from automl.errors import ConfigError
from automl.launchers import LAUNCHERS, Launcher
from automl.search_space import (
    SearchSpace,
    TrainSchema,
    default_schema_path,
    default_space_path,
    default_template_path,
    load_space_overrides,
    render_spec,
    search_spaces_dir,
)
from automl.study import attrs
from automl.study.best_export import export_best
from automl.study.events import Level, Note, Observer, StudyStarted, StudyStopped, TrialFinished
from automl.study.objective import DinoObjective, StudyContext, TrialFailed, TrialInterrupted
from automl.study.recovery import counted_trials, recover_study
from automl.study.results import StudyOutcome, finalize_study
from automl.study.showcase import FOLDER as SHOWCASE_FOLDER
from automl.study.showcase import Showcase, make_showcase
from automl.study.slots import SlotPool, plan_slots
from automl.tuning import build_pruner, build_sampler
from automl.ui.artifacts import ArtifactRecorder

# heartbeats and the stale-trial retry are "experimental" in Optuna 5.0; we rely on them
warnings.filterwarnings("ignore", category=ExperimentalWarning)


def resolve_trainer_command(cfg: RunConfig) -> RunConfig:
    """A bare ``dino`` that is not on PATH is taken from this interpreter's venv, so
    ``.venv/bin/automl run`` works without activating the venv. Containers keep it bare."""
    command = list(cfg.trainer.command)
    if cfg.launcher.name == "local" and command and os.sep not in command[0] and not shutil.which(command[0]):
        sibling = Path(sys.executable).parent / command[0]
        if sibling.exists():
            command[0] = str(sibling)
            trainer = cfg.trainer.model_copy(update={"command": command})
            return cfg.model_copy(update={"trainer": trainer})
    return cfg


def resolve_project_path(path: Path | None, default: Path) -> Path:
    """A relative path that does not exist from here is looked up beside the bundled
    ``search_spaces/`` folder, so packaged profiles can name their files portably."""
    if path is None:
        return default
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for base in (search_spaces_dir().parent, search_spaces_dir()):
        if (base / path).exists():
            return base / path
    raise ConfigError(f"file not found: {path} (looked in {Path.cwd()}, {search_spaces_dir().parent} "
                      f"and {search_spaces_dir()})")


def open_storage(cfg: RunConfig) -> RDBStorage:
    """RDB storage with heartbeats; stale trials come back as WAITING with the same params."""
    heartbeat = cfg.study.heartbeat_interval
    return RDBStorage(
        cfg.storage_url,
        engine_kwargs={"pool_pre_ping": True} if not cfg.storage_url.startswith("sqlite") else None,
        heartbeat_interval=heartbeat,
        grace_period=cfg.study.grace_period or 4 * heartbeat,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
            max_retry=cfg.study.max_retry, inherit_intermediate_values=True
        ),
    )


def open_study(cfg: RunConfig, attempts: int = 5) -> optuna.Study:
    """Create or load the study. Workers starting together race to create the tables
    and the study row; the loser of such a race simply tries again."""
    cfg.workspace.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=cfg.study.name,
                storage=open_storage(cfg),
                sampler=build_sampler(cfg.sampler),
                pruner=build_pruner(cfg.pruner),
                direction=cfg.metric.resolved_direction(),
                load_if_exists=True,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                optuna.exceptions.DuplicatedStudyError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == attempts - 1:
                if isinstance(exc, sqlalchemy.exc.OperationalError):  # unreachable server, bad credentials
                    raise storage_error(cfg.storage_url, exc) from None
                raise
            time.sleep(0.5 + attempt)
        except sqlalchemy.exc.ArgumentError as exc:  # not a database URL
            raise storage_error(cfg.storage_url, exc) from None
    raise AssertionError("unreachable")


class _FailureGuard:
    """Stops the study after too many consecutive failed trials, with a summary."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak: list[FrozenTrial] = []
        self.tripped = False
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            if trial.state == TrialState.FAIL and not trial.user_attrs.get(attrs.INTERRUPTED):
                self.streak.append(trial)
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                self.streak.clear()
            if len(self.streak) >= self.limit and not self.tripped:
                self.tripped = True
                study.stop()

    def summary(self) -> str:
        lines = [f"stopped after {len(self.streak)} consecutive failed trials:"]
        for t in self.streak:
            recorded = attrs.TrialAttrs.of(t)
            lines.append(f"  trial {t.number}: {recorded.failure or 'unknown failure'}")
            if recorded.failure_fix:
                lines.append(f"    fix: {recorded.failure_fix}")
        return "\n".join(lines)


class _BudgetGuard:
    """Stops when the study holds ``n_trials`` finished trials (other workers' too)."""

    def __init__(self, n_trials: int | None) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.n_trials is not None and counted_trials(study) >= self.n_trials:
            study.stop()


@dataclasses.dataclass
class _Interrupt:
    """First SIGINT/SIGTERM: stop jobs and leave cleanly. Second SIGINT: the default."""

    event: threading.Event
    previous: dict[int, Any] = dataclasses.field(default_factory=dict)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def check_template(cfg: RunConfig, schema: TrainSchema, template: dict[str, Any]) -> None:
    """Render the template with the run's fixed values once, before any data are staged:
    an unknown key, a bad value or a broken spec rule (``num_select``, feature levels,
    ``gpu_ids``) fails the run in seconds with a ConfigError naming it. Values that only
    the data give (the class count) are checked again by preflight, and each trial's
    sampled values by the search space's caps."""
    num_gpus = cfg.trainer.num_gpus
    assignments = {**cfg.fixed, "results_dir": str(cfg.study_dir.resolve() / "trial_check"),
                   "train.num_gpus": num_gpus, "train.gpu_ids": list(range(num_gpus))}
    try:
        render_spec(template, assignments, schema)
    except ConfigError as exc:
        raise ConfigError(f"the trial spec (template + fixed values) is invalid, so no trial could run: {exc}") from None


def launcher_record(cfg: RunConfig) -> dict[str, Any]:
    """The launcher as the study records it for later tasks (``automl best``): its name and
    options, without environment variables (they may carry credentials)."""
    options = cfg.launcher.options.model_dump(mode="json")
    return {"name": cfg.launcher.name,
            "options": {k: v for k, v in options.items() if "env" not in k and k != "registry_dir"}}


def build_launcher(cfg: RunConfig) -> Launcher:
    """The configured launcher; local job records live with the study, not in $HOME."""
    options = cfg.launcher.options
    if cfg.launcher.name == "local" and getattr(options, "registry_dir", None) is None:
        options = options.model_copy(update={"registry_dir": str((cfg.workspace / "jobs").resolve())})
    return LAUNCHERS.build(cfg.launcher.name, options)


def run_study(cfg: RunConfig, observe: Observer) -> StudyOutcome:
    cfg = resolve_trainer_command(cfg)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the observer reports every trial itself
    cfg.workspace.mkdir(parents=True, exist_ok=True)
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    schema = TrainSchema.load(resolve_project_path(cfg.trainer.schema_path, default_schema_path()))
    template = yaml.safe_load(resolve_project_path(cfg.trainer.template, default_template_path()).read_text())
    check_template(cfg, schema, template)
    data: PreparedData = prepare_data(cfg, template, observe)
    space = SearchSpace.build(
        schema,
        overrides=load_space_overrides(resolve_project_path(cfg.trainer.space, default_space_path())),
        context={**data.assignments, **cfg.fixed},
        template=template,
    )
    for line in space.warnings:  # schema entries left out of the space, once each
        observe(Note(line, Level.WARNING))
    study = open_study(cfg)
    study.set_user_attr(attrs.STUDY_METRIC, cfg.metric.name)
    study.set_user_attr(attrs.STUDY_LAUNCHER, launcher_record(cfg))
    study.set_user_attr(attrs.STUDY_TRAINER_COMMAND, list(cfg.trainer.command))
    study.set_metric_names([cfg.metric.name])  # the dashboard's axes name the metric
    recovered = recover_study(study, cfg.study.max_retry)
    if recovered:
        observe(Note(f"recovered trials of dead workers: {recovered} (queued to resume from their checkpoints)"))
    launcher = build_launcher(cfg)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    reaped = launcher.reap_orphans(cfg.study.name, running)
    if reaped:
        observe(Note(f"stopped {len(reaped)} orphaned job(s) of this study: {', '.join(reaped)}"))
    slots = SlotPool(plan_slots(cfg.devices, cfg.trainer.num_gpus, cfg.cpu_parallel))
    stop_event = threading.Event()
    ctx = StudyContext(
        config=cfg, schema=schema, space=space, template=template,
        data_assignments=data.assignments, read_only_paths=data.read_only_paths,
        launcher=launcher, slots=slots, stop_event=stop_event,
        on_event=observe,
        upload_artifact=ArtifactRecorder(cfg.workspace / "artifacts").upload,
    )

    def finished(study: optuna.Study, trial: FrozenTrial) -> None:
        observe(TrialFinished(trial.number, trial.state, trial.value))

    remaining = None if cfg.budget.n_trials is None else cfg.budget.n_trials - counted_trials(study)
    failures = _FailureGuard(cfg.budget.max_consecutive_failures)
    interrupt = _Interrupt(stop_event)
    interrupted = False
    started = time.monotonic()
    interrupt.install()
    try:
        if remaining is None or remaining > 0:
            best = (study.best_trial.number, float(study.best_value)) if study.best_trials else None
            observe(StudyStarted(study.study_name, remaining, tuple(slots.slots), best))
            try:
                study.optimize(
                    DinoObjective(ctx),
                    n_trials=remaining,
                    timeout=cfg.budget.timeout_s,
                    n_jobs=slots.size,
                    catch=(TrialFailed,),
                    callbacks=[failures, _BudgetGuard(cfg.budget.n_trials), finished],
                )
            except (TrialInterrupted, KeyboardInterrupt):
                interrupted = True
            finally:
                observe(StudyStopped())
        interrupted = interrupted or stop_event.is_set()
        if interrupted:
            recover_study(study, cfg.study.max_retry)  # queue the interrupted trials again
    finally:
        interrupt.restore()

    def exporter(best: FrozenTrial, spec: Path, checkpoint: Path) -> Path | None:
        if not cfg.export.enabled:
            return None
        out = (cfg.study_dir / "best_model.onnx").resolve()
        observe(Note(f"exporting trial {best.number}'s checkpoint to {out}"))
        try:
            result, log = export_best(launcher, cfg.trainer.command, cfg.study.name, best.number,
                                      Path(best.user_attrs[attrs.SPEC_PATH]), checkpoint, out,
                                      data.read_only_paths, cfg.export.timeout_s)
        except ValueError as exc:  # a trainer command we cannot derive an export from
            observe(Note(f"no export: {exc}", Level.WARNING))
            return None
        if result.exit_code != 0 or not out.exists():
            observe(Note(f"export failed (exit {result.exit_code}); see {log}", Level.WARNING))
            return None
        return out

    def showcase(best: FrozenTrial, checkpoint: Path) -> Showcase | None:
        if cfg.report.predictions == 0:
            return None
        observe(Note(f"drawing trial {best.number}'s detections on {cfg.report.predictions} validation images"))
        return make_showcase(
            study_name=cfg.study.name, trial=best.number, spec=Path(best.user_attrs[attrs.SPEC_PATH]),
            checkpoint=checkpoint, launcher=launcher, train_command=cfg.trainer.command,
            folder=cfg.study_dir / "report" / SHOWCASE_FOLDER, images=cfg.report.predictions,
            conf_threshold=cfg.report.conf_threshold, read_only_paths=data.read_only_paths,
            timeout_s=cfg.report.timeout_s,
        )  # fmt: skip

    return finalize_study(
        cfg, study, observe,
        exporter=exporter,
        showcase=showcase,
        interrupted=interrupted,
        failure_summary=failures.summary() if failures.tripped else None,
        elapsed_s=time.monotonic() - started,
    )
