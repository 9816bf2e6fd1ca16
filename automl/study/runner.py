"""Run a study from a RunConfig: the orchestration of one ``automl run``.

Checks what the host decides (workspace, devices, extractor: :mod:`automl.study.checks`),
renders the trial template once (a bad spec fails in seconds), opens the study on RDB
storage with heartbeats (an unreachable database, or a metric other than the one the
study was created for, fails here: :mod:`automl.study.identity`), and only then stages
and checks the data (before any GPU time) and builds the search space. It recovers what
dead workers left, runs ``study.optimize`` with one thread per device slot, each trial
started through the study's exact budget (:mod:`automl.study.budget`), with Ctrl-C
keeping interrupted trials for a retry (:mod:`automl.study.interrupts`), and finally
writes the best spec, the report, the export (one worker) and applies checkpoint
retention. What happens is told to an observer as events (:mod:`automl.study.events`);
nothing here prints.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

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
from automl.launchers.records import worker_id
from automl.optuna_private import GatedStudy, storage_of
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
from automl.study.best_export import export_best, export_command
from automl.study.budget import BudgetSpent, TrialBudget, finished_shares, may_start
from automl.study.checks import check_run
from automl.study.events import Level, Note, Observer, StudyStarted, StudyStopped, TrialFinished
from automl.study.export_claim import claim_export, finish_export
from automl.study.handover_ahead import HandOverAhead
from automl.study.identity import fix_identity
from automl.study.interrupts import Interrupts
from automl.study.objective import DinoObjective, StudyContext, TrialFailed, TrialInterrupted, prestart_warm_trainers
from automl.study.recovery import recover_study
from automl.study.results import StudyOutcome, best_own_trial, finalize_study
from automl.study.showcase import FOLDER as SHOWCASE_FOLDER
from automl.study.showcase import Showcase, make_showcase
from automl.study.slots import describe_packing, pool_for
from automl.study.storage import ThreadSafeRDBStorage
from automl.study.storage_lock import StorageLock
from automl.tuning import build_pruner, build_sampler
from automl.ui.artifacts import ArtifactRecorder
from dino.config.yaml_values import load_yaml

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
    return ThreadSafeRDBStorage(
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
            if isinstance(exc, sqlalchemy.exc.OperationalError) and not _creation_race(exc):
                raise storage_error(cfg.storage_url, exc) from None  # unreachable server, bad credentials: now
            if attempt == attempts - 1:
                if isinstance(exc, sqlalchemy.exc.OperationalError):
                    raise storage_error(cfg.storage_url, exc) from None
                raise
            time.sleep(0.5 + attempt)
        except sqlalchemy.exc.ArgumentError as exc:  # not a database URL
            raise storage_error(cfg.storage_url, exc) from None
    raise AssertionError("unreachable")


def _creation_race(exc: sqlalchemy.exc.OperationalError) -> bool:
    """SQLite's ways of saying another worker is creating the same tables right now."""
    text = str(exc).lower()
    return "locked" in text or "already exists" in text


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
            stops_now = trial.state == TrialState.FAIL and trial.user_attrs.get(attrs.FAILURE_CODE) in attrs.STOPS_STUDY
            if (len(self.streak) >= self.limit or stops_now) and not self.tripped:
                self.tripped = True
                study.stop()

    def summary(self) -> str:
        last = self.streak[-1] if self.streak else None
        if last is not None and last.user_attrs.get(attrs.FAILURE_CODE) in attrs.STOPS_STUDY:
            lines = [f"stopped: trial {last.number} failed on a setting every trial would repeat:"]
            self.streak = [last]
        else:
            lines = [f"stopped after {len(self.streak)} consecutive failed trials:"]
        for t in self.streak:
            recorded = attrs.TrialAttrs.of(t)
            lines.append(f"  trial {t.number}: {recorded.failure or 'unknown failure'}")
            if recorded.failure_fix:
                lines.append(f"    fix: {recorded.failure_fix}")
        return "\n".join(lines)


WARM_LIKE_SPEC = "warm_like.yaml"  # in the study folder: what the warm trainers warm up like


def check_template(cfg: RunConfig, schema: TrainSchema, template: dict[str, Any]) -> dict[str, Any]:
    """Render the template with the run's fixed values once, before any data are staged:
    an unknown key, a bad value or a broken spec rule (``num_select``, feature levels,
    ``gpu_ids``) fails the run in seconds with a ConfigError naming it. Values that only
    the data give (the class count) are checked again by preflight, and each trial's
    sampled values by the search space's caps."""
    num_gpus = cfg.trainer.num_gpus
    assignments = {**cfg.fixed, "results_dir": str(cfg.study_dir.resolve() / "trial_check"),
                   "train.num_gpus": num_gpus, "train.gpu_ids": list(range(num_gpus))}
    try:
        return render_spec(template, assignments, schema)
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


def run_study(cfg: RunConfig, observe: Observer, *, stop_event: threading.Event | None = None,
              data: PreparedData | None = None) -> StudyOutcome:
    """``stop_event``: set it (from another thread) to stop the running trials as a
    Ctrl-C does: their jobs stop and the trials are queued to resume (the nightly sets it
    at the end of its budget). ``data``: already staged and checked."""
    cfg = resolve_trainer_command(cfg)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the observer reports every trial itself
    check_run(cfg)  # workspace, devices, extractor: before anything is staged
    schema = TrainSchema.load(resolve_project_path(cfg.trainer.schema_path, default_schema_path()))
    template = load_yaml(resolve_project_path(cfg.trainer.template, default_template_path()).read_text())
    rendered = check_template(cfg, schema, template)
    study = open_study(cfg)  # the storage is reachable, and this study is what the config asks for
    fix_identity(study, cfg)
    study.set_metric_names([cfg.metric.name])  # the dashboard's axes name the metric
    if cfg.export.enabled:
        try:
            export_command(cfg.trainer.command)
        except ValueError as exc:
            observe(Note(f"the best model will not be exported: {exc} (or set export.enabled: false)", Level.WARNING))
    launcher = build_launcher(cfg)
    try:
        slots = pool_for(cfg, observe)
        # the first trials' trainers warm up while the data are staged (generating the
        # smoke's images took 23 s of an idle GPU before the first trial on an H200)
        like = cfg.study_dir / WARM_LIKE_SPEC
        like.parent.mkdir(parents=True, exist_ok=True)
        like.write_text(yaml.safe_dump(rendered, sort_keys=False))
        if prestart_warm_trainers(cfg, launcher, slots, like):
            observe(Note("warm trainers: starting ahead of the first trials, while the data are staged"))
        data = data if data is not None else prepare_data(cfg, template, observe)
    except BaseException:
        close_launcher(launcher)
        raise
    space = SearchSpace.build(
        schema,
        overrides=load_space_overrides(resolve_project_path(cfg.trainer.space, default_space_path())),
        context={**data.assignments, **cfg.fixed},
        template=template,
    )
    for line in space.warnings:  # schema entries left out of the space, once each
        observe(Note(line, Level.WARNING))
    study.set_user_attr(attrs.STUDY_LAUNCHER, launcher_record(cfg))
    study.set_user_attr(attrs.STUDY_TRAINER_COMMAND, list(cfg.trainer.command))
    recovered = recover_study(study, cfg.study.max_retry)
    if recovered:
        observe(Note(f"recovered trials of dead workers: {recovered} (queued to resume from their checkpoints)"))
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    reaped = launcher.reap_orphans(cfg.study.name, running)
    if reaped:
        observe(Note(f"stopped {len(reaped)} orphaned job(s) of this study: {', '.join(reaped)}"))
    lock = StorageLock(cfg.storage_url, getattr(storage_of(study), "engine", None), f"automl-study:{cfg.study.name}")
    budget = TrialBudget(cfg.budget.n_trials, lock)
    gated = GatedStudy(study, budget.gate)  # every trial starts through the budget's gate
    stop_event = stop_event if stop_event is not None else threading.Event()
    interrupts = Interrupts(stop_event)
    ctx = StudyContext(
        config=cfg, schema=schema, space=space, template=template,
        data_assignments=data.assignments, read_only_paths=data.read_only_paths,
        launcher=launcher, slots=slots, stop_event=stop_event,
        on_event=observe,
        upload_artifact=ArtifactRecorder(cfg.workspace / "artifacts").upload,
        interrupt_reason=interrupts.reason,
    )

    def finished(study: optuna.Study, trial: FrozenTrial) -> None:
        observe(TrialFinished(trial.number, trial.state, trial.value))

    failures = _FailureGuard(cfg.budget.max_consecutive_failures)
    exporter = _exporter(cfg, study, lock, launcher, data.read_only_paths, stop_event, observe)
    showcase = _showcase(cfg, launcher, data.read_only_paths, observe)
    ahead = HandOverAhead(cfg.budget.n_trials, best_own_trial, cfg.metric.aggregate, cfg.metric.name,
                          exporter, showcase, stop_event, on_start=lambda number: observe(Note(
                              f"every trial has started: handing the best so far (trial {number}) over ahead; "
                              "done again at the end if another trial beats it")))
    started = time.monotonic()
    try:
        with interrupts:  # from here on, Ctrl-C stops jobs and keeps their trials (automl.study.interrupts)
            interrupts.study = gated
            trials = study.get_trials(deepcopy=False)
            if cfg.budget.n_trials is None or may_start(trials, cfg.budget.n_trials):
                remaining = None if cfg.budget.n_trials is None else max(0, cfg.budget.n_trials - finished_shares(trials))
                best = (study.best_trial.number, float(study.best_value)) if study.best_trials else None
                observe(StudyStarted(study.study_name, remaining, tuple(s.devices for s in slots.slots), best,
                                     packing=describe_packing(slots)))
                try:
                    gated.optimize(
                        DinoObjective(ctx),
                        timeout=cfg.budget.timeout_s,
                        n_jobs=slots.size,
                        catch=(TrialFailed,),
                        callbacks=[failures, finished, ahead],
                    )
                except BudgetSpent:
                    pass  # the study holds its n_trials: other workers' trials count too
                except TrialInterrupted:
                    pass  # the stop event is set: handled below
                finally:
                    observe(StudyStopped())
            close_launcher(launcher)  # no more trials: the idle warm trainers go before the hand-off tasks
            interrupted = interrupts.interrupted or stop_event.is_set()
            if interrupted:
                recover_study(study, cfg.study.max_retry)  # queue the interrupted trials again
                queued = _queued_retries(study, worker_id())
                observe(Note(f"interrupted by {interrupts.reason() or 'a stop request'}: running jobs stopped"
                             + (f"; trial(s) {queued} queued to resume from their checkpoints" if queued else "")
                             + "; run the same command to continue", Level.WARNING))
            return finalize_study(
                cfg, study, observe,
                exporter=exporter, showcase=showcase, ahead=ahead,
                interrupted=interrupted,
                failure_summary=failures.summary() if failures.tripped else None,
                elapsed_s=time.monotonic() - started,
            )
    finally:
        ahead.close()
        close_launcher(launcher)  # also on errors: idle warm trainers (automl.launchers.warm)


def close_launcher(launcher: Launcher) -> None:
    """Release what a launcher keeps between jobs (the local launcher's idle warm
    trainers); launchers without a ``close`` keep nothing."""
    close = getattr(launcher, "close", None)
    if callable(close):
        close()


def _queued_retries(study: optuna.Study, worker: str) -> list[int]:
    """Trials this worker interrupted whose retry waits in the queue."""
    trials = study.get_trials(deepcopy=False)
    waiting = {t.system_attrs.get("failed_trial") for t in trials if t.state == TrialState.WAITING}
    return sorted(t.number for t in trials if t.user_attrs.get(attrs.INTERRUPTED)
                  and t.user_attrs.get(attrs.WORKER) == worker and t.number in waiting)


def _exporter(cfg: RunConfig, study: optuna.Study, lock: StorageLock, launcher: Launcher,
              read_only_paths: tuple[Path, ...], stop_event: threading.Event,
              observe: Observer) -> Callable[[FrozenTrial, Path, Path], Path | None] | None:
    """The export of the best checkpoint, by one worker only
    (:mod:`automl.study.export_claim`); None with ``export.enabled: false``."""
    if not cfg.export.enabled:
        return None

    def export(best: FrozenTrial, spec: Path, checkpoint: Path) -> Path | None:
        out = (cfg.study_dir / "best_model.onnx").resolve()
        decision = claim_export(study, lock, best.number, out, cfg.export.timeout_s)
        if not decision.export:
            observe(Note(f"no export by this worker: {decision.reason}"))
            return None
        observe(Note(f"exporting trial {best.number}'s checkpoint {checkpoint.name} to {out}"))
        exported: Path | None = None
        try:
            result, log = export_best(launcher, cfg.trainer.command, cfg.study.name, best.number,
                                      Path(best.user_attrs[attrs.SPEC_PATH]), checkpoint, out,
                                      read_only_paths, cfg.export.timeout_s, stop_event=stop_event)
            if result.exit_code != 0 or not out.exists():
                observe(Note(f"export failed (exit {result.exit_code}); see {log}", Level.WARNING))
            else:
                exported = out
        except ValueError as exc:  # a trainer command we cannot derive an export from
            observe(Note(f"no export: {exc}", Level.WARNING))
        finally:
            finish_export(study, best.number, exported)
        return exported

    return export


def _showcase(cfg: RunConfig, launcher: Launcher, read_only_paths: tuple[Path, ...],
              observe: Observer) -> Callable[[FrozenTrial, Path], Showcase | None] | None:
    """The best trial's detections drawn beside the ground truth on a few validation
    images, for the report (:mod:`automl.study.showcase`); None with
    ``report.predictions: 0``."""
    if cfg.report.predictions == 0:
        return None

    def showcase(best: FrozenTrial, checkpoint: Path) -> Showcase | None:
        observe(Note(f"drawing trial {best.number}'s detections on {cfg.report.predictions} validation images"))
        return make_showcase(
            study_name=cfg.study.name, trial=best.number, spec=Path(best.user_attrs[attrs.SPEC_PATH]),
            checkpoint=checkpoint, launcher=launcher, train_command=cfg.trainer.command,
            folder=cfg.study_dir / "report" / SHOWCASE_FOLDER, images=cfg.report.predictions,
            conf_threshold=cfg.report.conf_threshold, read_only_paths=read_only_paths,
            timeout_s=cfg.report.timeout_s,
        )  # fmt: skip

    return showcase
