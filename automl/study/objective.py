"""The objective: one Optuna trial = one training job, watched epoch by epoch.

sample params -> render spec.yaml into the trial's results dir -> launch on a device
slot -> tail the job's logs through the metric extractor -> ``trial.report`` each new
epoch, ask the pruner, stop the job when pruned -> the trial's value (best epoch by
default). A non-zero exit fails the trial with a diagnosis; the study goes on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml

from automl.config.run_config import RunConfig
from automl.errors import ConfigError
from automl.launchers.base import JobResult, JobSpec, Launcher
from automl.launchers.records import worker_id
from automl.launchers.warm import WarmTrainer
from automl.observe.diagnosis import Diagnosis, diagnose
from automl.observe.extractors import get_extractor
from automl.observe.memory import PeakMemoryReader
from automl.observe.metric_presence import MetricPresence, first_validation_epoch
from automl.observe.monitor import STATUS_RELPATH, TrialMonitor
from automl.observe.watchdog import JobLimits, JobWatchdog
from automl.optuna_private import frozen_trial, trial_id
from automl.search_space import SearchSpace, TrainSchema, render_spec
from automl.study import attrs
from automl.study.best_checkpoint import best_checkpoint_assignments
from automl.study.caches import kernel_cache_env
from automl.study.events import Observer, TrialEvent, ignore
from automl.study.sharing import RetryAlone, finish_lease_attrs, retry_alone, set_lease_attrs, timed_stop
from automl.study.slots import Lease, SlotPool, SlotWaitCancelled
from automl.study.trial_paths import trial_results_dir
from metric_extractors import EpochMetrics

LOG_TAIL_LINES = 40


class TrialFailed(Exception):
    """The job failed; the message is the diagnosis. Caught by ``study.optimize``."""


class TrialInterrupted(Exception):
    """The study was interrupted while this trial ran; it is retried on the next run."""


@dataclasses.dataclass
class StudyContext:
    """What every trial of a run shares; built once by the study runner."""

    config: RunConfig
    schema: TrainSchema
    space: SearchSpace
    template: dict[str, Any]
    data_assignments: dict[str, Any]  # dataset paths, class count: dotted path -> value
    read_only_paths: tuple[Path, ...]
    launcher: Launcher
    slots: SlotPool
    stop_event: threading.Event
    on_event: Observer = ignore
    upload_artifact: Callable[[optuna.Study, int, Path, str], object] | None = None
    interrupt_reason: Callable[[], str | None] = lambda: None  # "SIGINT (Ctrl-C)" once interrupted


def trial_assignments(ctx: StudyContext, params: dict[str, Any], results_dir: Path,
                      slot: tuple[int, ...]) -> dict[str, Any]:
    """Every value a trial's spec sets over the template: data, the trainer's best-epoch
    checkpoint metric, fixed values, the sampled parameters, where results go and which
    devices it has (renumbered from 0)."""
    num_gpus = ctx.config.trainer.num_gpus if slot else 1
    metric = ctx.config.metric
    return {
        **ctx.data_assignments,
        **best_checkpoint_assignments(metric.name, metric.resolved_direction(), ctx.schema),  # fixed values win
        **ctx.config.fixed,
        **params,
        "results_dir": str(results_dir),
        "train.num_gpus": num_gpus,
        "train.gpu_ids": list(range(num_gpus)),
    }


def warm_trainer(cfg: RunConfig, spec_path: Path, devices: tuple[int, ...],
                 at_once: int = 1) -> WarmTrainer | None:
    """How a trial's trainer can be started ahead of it: the bundled trainer on the local
    launcher, on GPUs (its warm trainers, ``automl.launchers.warm``); None otherwise. On
    the CPU a spare's imports and warm-up would take the cores the running trials train on.
    ``at_once``: how many trials may launch together on ``devices`` (the packing ceiling)."""
    program = cfg.trainer.warm_program()
    if program is None or cfg.launcher.name != "local" or not devices:
        return None
    return WarmTrainer(program, spec_path, (*cfg.trainer.command[len(program):], "-e", str(spec_path)),
                       spares=at_once)


def prestart_warm_trainers(cfg: RunConfig, launcher: Launcher, slots: SlotPool, like: Path) -> int:
    """Start each GPU slot's warm trainers before the first trial, warmed up like the spec
    ``like`` (the template with the fixed values: what a trial's spec shares), with the
    environment a trial's job on that slot gets; so the first trials start warm too
    instead of paying imports and CUDA start-up. Returns how many slots got spares (0:
    the launcher keeps none, or the trials start cold anyway)."""
    prestart = getattr(launcher, "prestart", None)
    if not callable(prestart):
        return 0
    started = 0
    for slot in slots.slots:
        warm = warm_trainer(cfg, like, slot.devices, slots.policy.ceiling)
        if warm is not None:
            prestart(warm, slot.devices, {**slots.thread_env(slot), **kernel_cache_env(cfg)}, cfg.study_dir)
            started += 1
    return started


class DinoObjective:
    """Callable passed to ``study.optimize``; safe to run in several threads at once."""

    def __init__(self, ctx: StudyContext) -> None:
        self.ctx = ctx
        self.maximize = ctx.config.metric.resolved_direction() == "maximize"

    # -- one trial --------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.ctx.config
        results_dir = trial_results_dir(cfg.study_dir, trial)
        results_dir.mkdir(parents=True, exist_ok=True)
        alone = bool(trial.user_attrs.get(attrs.RUN_ALONE))
        while True:
            try:
                return self._attempt(trial, results_dir, alone)
            except RetryAlone:
                alone = True  # that lease has ended; the next one waits for an empty slot
            except SlotWaitCancelled as exc:
                trial.set_user_attr(attrs.INTERRUPTED, True)
                raise TrialInterrupted(str(exc)) from None

    def _attempt(self, trial: optuna.Trial, results_dir: Path, alone: bool) -> float:
        """One job of the trial on a leased slot (a second one after an OOM beside others).
        The slot first, then the sample: a trial that waited for room is sampled with what
        finished meanwhile (a retry gets its same values back)."""
        cfg = self.ctx.config
        with self.ctx.slots.acquire(trial.number, alone=alone, cancel=self.ctx.stop_event) as lease:
            params = self.ctx.space.suggest(trial)
            slot = lease.slot.devices
            trial.set_user_attr(attrs.RESULTS_DIR, str(results_dir))
            trial.set_user_attr(attrs.WORKER, worker_id())
            for stale in attrs.CLEARED_ON_RETRY:
                if stale in trial.user_attrs:  # inherited from the trial this one retries
                    trial.set_user_attr(stale, None)
            spec_path = self._write_spec(trial, params, results_dir, slot)
            trial.set_user_attr(attrs.SPEC_PATH, str(spec_path))
            trial.set_user_attr(attrs.DEVICE, lease.slot.name)
            set_lease_attrs(trial, lease)
            self._upload(trial, spec_path, "spec.yaml")
            cache_env = kernel_cache_env(cfg)
            job = JobSpec(
                study_name=cfg.study.name,
                trial_number=trial.number,
                command=(*cfg.trainer.command, "-e", str(spec_path)),
                results_dir=results_dir,
                log_path=results_dir / "stdout.log",
                devices=slot,
                env={**lease.env, **cache_env},
                read_only_paths=self.ctx.read_only_paths,
                workdir=results_dir,
                cache_dirs=tuple(Path(v) for v in cache_env.values()),
                warm=warm_trainer(cfg, spec_path, slot, self.ctx.slots.policy.ceiling),
            )
            return self._run_job(trial, job, lease)

    def _write_spec(self, trial: optuna.Trial, params: dict[str, Any], results_dir: Path,
                    slot: tuple[int, ...]) -> Path:
        """Render and write ``spec.yaml``. A spec the schema or a rule refuses fails this
        trial (never the study); the runner renders the template once before staging,
        so this only catches what one sampled point breaks."""
        try:
            spec = render_spec(self.ctx.template, trial_assignments(self.ctx, params, results_dir, slot),
                               self.ctx.schema)
        except ConfigError as exc:
            message = f"its spec could not be rendered: {exc}"
            trial.set_user_attr(attrs.FAILURE, message)
            trial.set_user_attr(attrs.FAILURE_CODE, "spec_error")
            trial.set_user_attr(attrs.FAILURE_FIX, "Fix the search space or the fixed values named above "
                                "(`automl space sample` shows sampled values).")
            self.ctx.on_event(TrialEvent("failed", trial.number, slot, message=message))
            raise TrialFailed(message) from None
        spec_path = results_dir / "spec.yaml"
        tmp = spec_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
        os.replace(tmp, spec_path)
        return spec_path

    def _run_job(self, trial: optuna.Trial, job: JobSpec, lease: Lease) -> float:
        cfg = self.ctx.config
        slot = lease.slot.devices
        extractor = get_extractor(cfg.metric.extractor, cfg.metric.extractor_options)
        monitor = TrialMonitor(job.results_dir, job.log_path, extractor)
        memory = PeakMemoryReader(job.results_dir)
        # a retried trial inherits its predecessor's epochs; they are not reported twice
        reported = dict(frozen_trial(trial).intermediate_values)
        if self.ctx.stop_event.is_set():  # Ctrl-C before the job started: nothing to stop
            self._interrupted(trial, job, slot, reported)
        watchdog = JobWatchdog((job.log_path, job.results_dir / STATUS_RELPATH),
                               JobLimits(cfg.budget.trial_timeout_s, cfg.budget.stall_timeout_s))
        presence = MetricPresence(cfg.metric.name, first_validation_epoch(job.results_dir / "spec.yaml"),
                                  job.results_dir, same_file=extractor.source == "status",
                                  grace_s=5.0 + 2 * cfg.launcher.poll_interval, already_seen=bool(reported))
        handle = self.ctx.launcher.launch(job)
        trial.set_user_attr(attrs.JOB_ID, handle.id)
        self.ctx.on_event(TrialEvent("started", trial.number, slot, message=handle.id))
        result: JobResult | None = None
        try:
            while True:
                result = handle.poll()  # read before the logs: no epoch written before exit is missed
                if (peak := memory.poll()) is not None:
                    lease.report_peak(peak)
                presence.advance()  # and the trainer's progress before the extractor's
                new_epochs = monitor.poll()
                presence.note(new_epochs)
                prune_epoch = self._report_new_epochs(trial, new_epochs, reported, slot)
                if prune_epoch is None and result is not None:
                    # the last line may lack its newline: flush what the extractor holds
                    prune_epoch = self._report_new_epochs(trial, monitor.finish(), reported, slot)
                if prune_epoch is not None:
                    result = timed_stop(trial, handle, cfg.launcher.prune_grace_period)
                    self._finish_lease(trial, lease, memory)
                    self._prune(trial, job, slot, prune_epoch, reported[prune_epoch])
                if result is not None:
                    break
                if self.ctx.stop_event.is_set():
                    result = timed_stop(trial, handle, cfg.launcher.grace_period)
                    self._finish_lease(trial, lease, memory)
                    self._interrupted(trial, job, slot, reported)
                overrun = watchdog.check(_progress(reported, presence.finished_epoch))
                if overrun is None and presence.missing():
                    overrun = _metric_missing(cfg.metric.name, cfg.metric.extractor, monitor, presence)
                if overrun is not None:
                    result = timed_stop(trial, handle, cfg.launcher.grace_period)
                    self._finish_lease(trial, lease, memory)
                    self._finish_attrs(trial, job)
                    self._fail_diagnosed(trial, slot, overrun, result.exit_code)
                time.sleep(cfg.launcher.poll_interval)
        finally:
            presence.close()
            if result is None:  # an exception escaped the loop: never leave a job behind
                result = handle.stop(cfg.launcher.grace_period)
        self._finish_lease(trial, lease, memory)
        self._finish_attrs(trial, job)
        if result.exit_code != 0 or result.oom_killed:
            self._fail(trial, job, result, monitor, lease)
        if not reported:
            self._fail_diagnosed(trial, slot, _metric_missing(cfg.metric.name, cfg.metric.extractor, monitor, None),
                                 result.exit_code)
        values = [reported[k] for k in sorted(reported)]
        value = values[-1] if cfg.metric.aggregate == "last" else (max(values) if self.maximize else min(values))
        self.ctx.on_event(TrialEvent("completed", trial.number, slot, value=value))
        return value

    def _report_new_epochs(
        self,
        trial: optuna.Trial,
        new_epochs: list[EpochMetrics],
        reported: dict[int, float],
        slot: tuple[int, ...],
    ) -> int | None:
        """Report each new epoch's value; the epoch at which the pruner says stop, or None."""
        name = self.ctx.config.metric.name
        for item in new_epochs:
            value = item.values.get(name)
            if value is None or item.epoch in reported or math.isnan(value):
                continue
            reported[item.epoch] = value
            trial.report(value, step=item.epoch)
            self.ctx.on_event(TrialEvent("epoch", trial.number, slot, epoch=item.epoch, value=value))
            if trial.should_prune():
                return item.epoch
        return None

    def _prune(self, trial: optuna.Trial, job: JobSpec, slot: tuple[int, ...], epoch: int, value: float) -> None:
        """The job is already stopped; record why and end the trial as PRUNED."""
        trial.set_user_attr(attrs.PRUNE_EPOCH, epoch)
        self._finish_attrs(trial, job)
        self.ctx.on_event(TrialEvent("pruned", trial.number, slot, epoch=epoch, value=value))
        raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.ctx.config.metric.name}={value:.4f})")

    def _interrupted(self, trial: optuna.Trial, job: JobSpec, slot: tuple[int, ...], reported: dict[int, float]) -> None:
        """The study is being interrupted: the job is stopped; record why, so the trial
        is queued to resume (its checkpoints stay) and not counted as a failure."""
        where = f"after epoch {max(reported)}" if reported else "before its first epoch"
        message = (f"interrupted ({self.ctx.interrupt_reason() or 'stop requested'}) {where}; queued to resume "
                   "from its latest checkpoint on the next run")
        trial.set_user_attr(attrs.INTERRUPTED, True)
        trial.set_user_attr(attrs.FAILURE, message)
        trial.set_user_attr(attrs.FAILURE_CODE, "interrupted")
        self._finish_attrs(trial, job)
        self.ctx.on_event(TrialEvent("interrupted", trial.number, slot, message=message))
        raise TrialInterrupted(f"trial {trial.number} {message}")

    def _fail_diagnosed(self, trial: optuna.Trial, slot: tuple[int, ...], diagnosis: Diagnosis,
                        exit_code: int | None = None) -> None:
        """Fail the trial with a diagnosis the orchestrator made itself (a limit, a
        missing metric); the job is already stopped."""
        if exit_code is not None:
            trial.set_user_attr(attrs.EXIT_CODE, exit_code)
        trial.set_user_attr(attrs.FAILURE, diagnosis.summary)
        trial.set_user_attr(attrs.FAILURE_CODE, diagnosis.code)
        trial.set_user_attr(attrs.FAILURE_FIX, diagnosis.fix)
        message = f"{diagnosis.summary} -> {diagnosis.fix}"
        self.ctx.on_event(TrialEvent("failed", trial.number, slot, message=message))
        raise TrialFailed(message)

    def _fail(self, trial: optuna.Trial, job: JobSpec, result: JobResult, monitor: TrialMonitor,
              lease: Lease) -> None:
        tail = _tail(job.log_path, LOG_TAIL_LINES)
        diagnosis = diagnose(result.exit_code, tail, monitor.status_lines(), result.oom_killed)
        if retry_alone(trial, lease, diagnosis, result.exit_code):
            self.ctx.on_event(TrialEvent("retry_alone", trial.number, lease.slot.devices, message=(
                f"ran out of GPU memory beside trial(s) {', '.join(map(str, sorted(lease.neighbours)))}; "
                "retried alone from its latest checkpoint")))
            raise RetryAlone(trial.number)
        trial.set_user_attr(attrs.EXIT_CODE, result.exit_code)
        trial.set_user_attr(attrs.FAILURE, diagnosis.summary)
        trial.set_user_attr(attrs.FAILURE_CODE, diagnosis.code)
        trial.set_user_attr(attrs.FAILURE_FIX, diagnosis.fix)
        message = f"exit code {result.exit_code}: {diagnosis.summary} -> {diagnosis.fix}"
        self.ctx.on_event(TrialEvent("failed", trial.number, message=message))
        raise TrialFailed(message)

    def _finish_lease(self, trial: optuna.Trial, lease: Lease, memory: PeakMemoryReader) -> None:
        """Called once the job is gone: when it ended, beside whom, its peak memory."""
        if (peak := memory.poll()) is not None:
            lease.report_peak(peak)
        memory.close()
        finish_lease_attrs(trial, lease)

    def _finish_attrs(self, trial: optuna.Trial, job: JobSpec) -> None:
        tail = _tail(job.log_path, LOG_TAIL_LINES)
        trial.set_user_attr(attrs.LOG_TAIL, tail[-4000:])
        tail_file = job.results_dir / "log_tail.txt"
        tail_file.write_text(tail)
        self._upload(trial, tail_file, "log_tail.txt")

    def _upload(self, trial: optuna.Trial, path: Path, name: str) -> None:
        if self.ctx.upload_artifact is not None and path.exists():
            self.ctx.upload_artifact(trial.study, trial_id(trial), path, name)


def _progress(reported: dict[int, float], finished_epoch: int | None) -> str:
    """Where a job is, for a limit's message."""
    if finished_epoch is not None:
        return f"after finishing epoch {finished_epoch}"
    return f"after epoch {max(reported)}" if reported else "before finishing its first epoch"


def _metric_missing(metric: str, extractor: str, monitor: TrialMonitor, presence: MetricPresence | None) -> Diagnosis:
    """The study's metric is not in what the extractor read: a config mistake that every
    other trial would repeat, so the study stops on it (:data:`attrs.STOPS_STUDY`)."""
    seen = monitor.seen_summary()
    if presence is None:
        when = "the job exited 0 but"
    else:
        when = f"epoch {presence.finished_epoch} (the first validated one is {presence.first_validation}) ended but"
    return Diagnosis(
        "metric_missing",
        f"{when} {seen.describe(metric)}",
        f"Set metric.name to a metric the extractor finds ({', '.join(seen.metric_names) or 'it found none'}), "
        f"or choose another metric.extractor / its options; extractor {extractor!r} reads {seen.path.name}.",
    )


def _tail(path: Path, lines: int) -> str:
    """Last ``lines`` lines of a possibly huge file, reading only its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
