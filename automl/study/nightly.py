"""One night of tuning that improves a champion (``automl nightly``), in order:

1. stage the newest data (sources re-read; a changed S3 object is staged afresh, an
   unchanged one is a cache hit by ETag and size) and the fixed held-out set;
2. open tonight's study, ``<study.name>-YYYYMMDD``;
3. warm start from the previous nights (:mod:`automl.study.warm_start`);
4. tune within the budget: no trial starts after ``budget - reserve`` and the running
   ones are stopped then, cleanly, and re-queued (:func:`automl.study.runner.run_study`);
5. score the night's best checkpoint and the champion's on the held-out set
   (:mod:`automl.study.holdout`, through the study's launcher);
6. promote the night's best (spec, checkpoint, ONNX export) only if it wins by the
   margin (:mod:`automl.study.champion`: atomic);
7. retention across nights (:mod:`automl.study.night_retention`);
8. the run record (:mod:`automl.study.night_record`) and the page of the champion's
   metric across nights.

One night at a time: the night holds a lock in the workspace (:mod:`automl.study.run_lock`);
a night started while another runs is skipped and recorded as such. A night that fails
at any step records why and leaves the champion as it was (only step 6's final rename
changes it); the next night runs normally. Nothing here prints: steps are told to the
observer as notes, and the record is returned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import optuna

from automl.config.nightly import NightlyConfig
from automl.config.run_config import RunConfig
from automl.datasets.prepare import PreparedData, max_category_id, prepare_data
from automl.datasets.staging import StagedSplit, stage
from automl.errors import DatasetError
from automl.search_space import (
    SearchSpace,
    TrainSchema,
    default_schema_path,
    default_space_path,
    default_template_path,
    load_space_overrides,
)
from automl.study import attrs
from automl.study.best_export import export_best
from automl.study.champion import Champion, ChampionError, current_champion, decide, promote, prune_versions
from automl.study.events import Level, Note, Observer
from automl.study.holdout import Evaluation, evaluate_checkpoint
from automl.study.night_record import NightRecord, append_record, now_iso, read_records
from automl.study.night_retention import remove_old_checkpoints
from automl.study.results import StudyOutcome, own_trials
from automl.study.run_lock import LockHeld, run_lock
from automl.study.runner import (
    build_launcher,
    open_study,
    resolve_project_path,
    resolve_trainer_command,
    run_study,
)
from automl.study.slots import plan_slots
from automl.study.warm_start import warm_start
from dino.config.yaml_values import load_yaml

STUDY_NIGHTLY_BASE = "nightly_base"  # study user attribute: the base name of its nightly


class NightInterrupted(Exception):
    """SIGTERM / SIGINT during the night: it stops, the champion stays."""


def tonight(cfg: NightlyConfig, now: dt.datetime | None = None) -> dt.date:
    """Today's date in the nightly's time zone."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(cfg.tz).date()


def run_night(cfg: NightlyConfig, observe: Observer, *, night: dt.date | None = None,
              budget_s: float | None = None, force: bool = False) -> NightRecord:
    """Run one night (see the module docstring); returns its record, also appended to
    ``cfg.record_path``. ``budget_s`` overrides ``nightly.budget``; ``force`` runs a night
    that is already done again (it extends that night's study)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the observer reports what matters
    night = night or tonight(cfg)
    run_cfg = resolve_trainer_command(cfg.for_night(night))
    budget = budget_s if budget_s is not None else cfg.nightly.budget
    reserve = cfg.nightly.resolved_reserve(budget)  # ValueError before any work
    record = NightRecord(run_id=uuid.uuid4().hex[:12], night=night.isoformat(), study=run_cfg.study.name,
                         status="running", started_at=now_iso(), study_metric=run_cfg.metric.name)
    try:
        with run_lock(cfg.lock_path, what=f"night {night} ({record.study})"):
            done = [r for r in read_records(cfg.record_path) if r.study == record.study and r.status == "done"]
            if done and not force:
                return _skipped(cfg, record, observe, f"night {night} is done already (finished "
                                f"{done[-1].finished_at}); pass --force to run it again")
            append_record(cfg.record_path, record)
            return _Night(cfg, run_cfg, record, observe, budget, reserve).run()
    except LockHeld as held:
        return _skipped(cfg, record, observe, f"another night is still running: {held.holder.describe()}")


def _skipped(cfg: NightlyConfig, record: NightRecord, observe: Observer, reason: str) -> NightRecord:
    record.status, record.reason, record.finished_at = "skipped", reason, now_iso()
    append_record(cfg.record_path, record)
    observe(Note(f"night skipped: {reason}", Level.WARNING))
    return record


@dataclasses.dataclass
class _Night:
    cfg: NightlyConfig
    run_cfg: RunConfig
    record: NightRecord
    observe: Observer
    budget: float | None
    reserve: float
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    interrupted: threading.Event = dataclasses.field(default_factory=threading.Event)
    deadline_hit: threading.Event = dataclasses.field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.deadline = None if self.budget is None else self.started + self.budget
        self.night = dt.date.fromisoformat(self.record.night)
        # the evaluations' devices: the first slot of the run's devices
        self.slot = plan_slots(self.run_cfg.devices.use, self.run_cfg.trainer.num_gpus)[0].devices

    # -- the night ---------------------------------------------------------------------
    def run(self) -> NightRecord:
        previous = self._install_signals()
        try:
            data, holdout = self._timed("stage", self._stage)
            study = open_study(self.run_cfg)
            study.set_user_attr(STUDY_NIGHTLY_BASE, self.cfg.base_name)
            self._timed("warm_start", lambda: self._warm_start(study, data))
            outcome = self._timed("tune", lambda: self._tune(data))
            candidate, champion, result = self._timed("evaluate", lambda: self._evaluate(outcome, holdout))
            self._timed("promote", lambda: self._promote(outcome, candidate, champion, result))
            self._timed("retention", self._retention)
            self.record.status = "done"
        except NightInterrupted as exc:
            self.record.status, self.record.reason = "interrupted", str(exc)
            self.observe(Note(f"night interrupted: {exc}; the champion is unchanged", Level.WARNING))
        except BaseException as exc:
            self.record.status = "crashed"
            self.record.error = f"{type(exc).__name__}: {exc}"
            self.record.reason = self.record.reason or "the night failed; the champion is unchanged"
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.record.finished_at = now_iso()
            self.record.durations["total"] = round(time.monotonic() - self.started, 3)
            append_record(self.cfg.record_path, self.record)
            self._write_page()
        return self.record

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, frame: Any) -> None:
            self.interrupted.set()
            self.stop.set()

        return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _check_interrupted(self, during: str) -> None:
        if self.interrupted.is_set():
            raise NightInterrupted(f"stopped by a signal during {during}")

    def _timed(self, step: str, fn: Any) -> Any:
        self._check_interrupted(step.replace("_", " "))
        t = time.monotonic()
        try:
            return fn()
        finally:
            self.record.durations[step] = round(time.monotonic() - t, 3)

    def _left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    # -- 1. data ------------------------------------------------------------------------
    def _stage(self) -> tuple[PreparedData, StagedSplit]:
        cfg = self.run_cfg
        self.template = load_yaml(resolve_project_path(cfg.trainer.template, default_template_path()).read_text())
        data = prepare_data(cfg, self.template, self.observe)  # re-reads every source
        source = self.cfg.nightly.evaluation.data
        if source is None:
            holdout = data.val
        else:
            cache = (cfg.data.cache_dir or cfg.workspace / "cache").resolve()
            holdout = stage(source, cache)
        num_classes = data.assignments.get("dataset.num_classes", cfg.fixed.get("dataset.num_classes"))
        if num_classes is not None and max_category_id(holdout) >= int(num_classes):
            raise DatasetError(
                f"the held-out set {holdout.source or holdout.json_file} has category id {max_category_id(holdout)}, "
                f"but the models have dataset.num_classes={num_classes}: use a held-out set of the same classes "
                "(nightly.evaluation.data) or raise dataset.num_classes")
        splits = [("train", data.train), ("val", data.val)] + ([("holdout", holdout)] if source is not None else [])
        fresh = [name for name, split in splits if split.staged_now]
        self.record.data.train = data.train.source
        self.record.data.val = data.val.source
        self.record.data.holdout = holdout.source or str(holdout.json_file)
        self.record.data.staged_afresh = fresh
        self.observe(Note("data: " + (f"staged afresh: {', '.join(fresh)}" if fresh
                                      else "unchanged since the last staging (cache hits)")))
        return data, holdout

    # -- 2, 3. study and warm start -----------------------------------------------------------
    def _warm_start(self, study: optuna.Study, data: PreparedData) -> None:
        ws_cfg = self.cfg.nightly.warm_start
        if ws_cfg.top_k == 0 and not ws_cfg.seed_sampler:
            return
        cfg = self.run_cfg
        space = SearchSpace.build(  # tonight's space, as run_study builds it: what still fits it is reused
            TrainSchema.load(resolve_project_path(cfg.trainer.schema_path, default_schema_path())),
            overrides=load_space_overrides(resolve_project_path(cfg.trainer.space, default_space_path())),
            context={**data.assignments, **cfg.fixed},
            template=self.template,
        )
        ws = warm_start(study, space, self.cfg.base_name, self.night, top=ws_cfg.top_k, nights=ws_cfg.nights,
                        seed_sampler=ws_cfg.seed_sampler, maximize=self.cfg.maximize)
        r = self.record.warm_start
        r.from_studies, r.enqueued = list(ws.from_studies), [p.source for p in ws.enqueued]
        r.seeded, r.left_out = ws.seeded, ws.left_out
        if not ws.from_studies:
            self.observe(Note("warm start: no previous night in this storage; starting cold"))
        else:
            self.observe(Note(
                f"warm start from {len(ws.from_studies)} night(s): enqueued {len(ws.enqueued)} best parameter "
                f"set(s) ({', '.join(r.enqueued) or 'none'}), seeded the sampler with {ws.seeded} trial(s)"
                + (f", left out {ws.left_out} that no longer fit the space" if ws.left_out else "")))

    # -- 4. tuning ----------------------------------------------------------------------
    def _tune(self, data: PreparedData) -> StudyOutcome | None:
        # the ONNX export is made for a promoted model only (step 6), not for every night's best
        cfg = self.run_cfg.model_copy(update={"export": self.run_cfg.export.model_copy(update={"enabled": False})})
        left = self._left()
        timer: threading.Timer | None = None
        if left is not None:
            tune_s = left - self.reserve
            if tune_s <= 0:
                self.record.reason = "no time left to tune after staging"
                self.observe(Note(f"{self.record.reason} (budget {self.budget:.0f} s, reserve {self.reserve:.0f} s)",
                                  Level.WARNING))
                return None
            timeout = tune_s if cfg.budget.timeout_s is None else min(cfg.budget.timeout_s, tune_s)
            cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"timeout_s": timeout})})

            def on_time() -> None:
                self.deadline_hit.set()
                self.stop.set()

            timer = threading.Timer(tune_s, on_time)
            timer.daemon = True
            timer.start()
            self.observe(Note(f"tuning for at most {tune_s:.0f} s (budget {self.budget:.0f} s, "
                              f"{self.reserve:.0f} s kept for evaluation and promotion)"))
        try:
            outcome = run_study(cfg, self.observe, stop_event=self.stop, data=data)
        finally:
            if timer is not None:
                timer.cancel()
        if self.interrupted.is_set() or (outcome.interrupted and not self.deadline_hit.is_set()):
            raise NightInterrupted("stopped by a signal while tuning (the running trials were re-queued)")
        self.record.stopped_on_time = self.deadline_hit.is_set()
        if self.record.stopped_on_time:
            self.observe(Note("the night's tuning time is over: running trials were stopped and re-queued"))
        study = open_study(self.run_cfg)
        counts: dict[str, int] = {}
        for t in own_trials(study):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        self.record.trials = counts
        self.record.best_trial, self.record.best_value = outcome.best_trial, outcome.best_value
        return outcome

    # -- 5. evaluation ------------------------------------------------------------------
    def _eval_timeout(self) -> float:
        left = self._left()
        limit = self.cfg.nightly.evaluation.timeout
        return limit if left is None else max(1.0, min(limit, left))

    def _evaluate_one(self, role: str, trial_number: int, spec: Path, checkpoint: Path,
                      holdout: StagedSplit) -> Evaluation:
        cfg = self.run_cfg
        env = {} if self.slot else {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
        self.observe(Note(f"evaluating the {role} ({checkpoint}) on the held-out set"))
        result = evaluate_checkpoint(
            self.launcher, list(cfg.trainer.command), study_name=cfg.study.name, trial_number=trial_number,
            spec=spec, checkpoint=checkpoint, holdout=holdout,
            out_dir=self.cfg.nightly_dir / "evaluations" / cfg.study.name / role, metric=self.cfg.champion_metric,
            timeout_s=self._eval_timeout(), devices=self.slot, env=env, stop=self.interrupted,
            grace_period=cfg.launcher.grace_period)
        self._check_interrupted(f"the {role}'s evaluation")
        if result.ok:
            self.observe(Note(f"{role}: {result.metric}={result.value:.4f}"))
        else:
            self.observe(Note(f"{role} not scored: {result.error}; log {result.log}", Level.WARNING))
        return result

    def _evaluate(self, outcome: StudyOutcome | None,
                  holdout: StagedSplit) -> tuple[Evaluation | None, Champion | None, tuple[bool, str | None]]:
        self.launcher = build_launcher(self.run_cfg)
        ev = self.record.evaluation
        ev.metric = self.cfg.champion_metric
        champion: Champion | None = None
        champion_error: str | None = None
        try:
            champion = current_champion(self.cfg.champion_dir)
        except ChampionError as exc:
            champion_error = str(exc)
        has_champion = champion is not None or champion_error is not None
        candidate: Evaluation | None = None
        if outcome is None or outcome.best_trial is None or outcome.best_checkpoint is None or outcome.best_spec is None:
            ev.candidate_error = "the night has no completed trial with a checkpoint"
        else:
            candidate = self._evaluate_one("candidate", outcome.best_trial, outcome.best_spec,
                                           outcome.best_checkpoint, holdout)
            ev.candidate, ev.candidate_error, ev.candidate_log = candidate.value, candidate.error, candidate.log
        if champion is not None and candidate is not None and candidate.ok:
            ev.champion_name = champion.name
            scored = self._evaluate_one("champion", champion.trial, champion.spec, champion.checkpoint, holdout)
            ev.champion, ev.champion_error, ev.champion_log = scored.value, scored.error, scored.log
        elif champion_error is not None:
            ev.champion_error = champion_error
        return candidate, champion, (has_champion, ev.champion_error)

    # -- 6. promotion ---------------------------------------------------------------------
    def _promote(self, outcome: StudyOutcome | None, candidate: Evaluation | None, champion: Champion | None,
                 result: tuple[bool, str | None]) -> None:
        has_champion, champion_error = result
        ev = self.record.evaluation
        decision = decide(ev.candidate, ev.champion, has_champion=has_champion,
                          margin=self.cfg.nightly.champion.margin, maximize=self.cfg.maximize,
                          metric=self.cfg.champion_metric, candidate_error=ev.candidate_error,
                          champion_error=champion_error)
        reason = decision.reason
        if decision.promote:
            assert outcome is not None and candidate is not None and outcome.best_trial is not None
            onnx, export_problem = self._export(outcome)
            if export_problem is not None:
                reason = f"not promoted: {export_problem}"
            else:
                assert outcome.best_spec is not None and outcome.best_checkpoint is not None
                study = open_study(self.run_cfg)
                best = study.trials[outcome.best_trial]
                champion = promote(
                    self.cfg.champion_dir, spec=outcome.best_spec, checkpoint=outcome.best_checkpoint, onnx=onnx,
                    study=self.run_cfg.study.name, trial=outcome.best_trial, night=self.record.night,
                    params=best.params, study_metric=self.run_cfg.metric.name, study_value=outcome.best_value,
                    holdout_metric=self.cfg.champion_metric, holdout_value=candidate.value, reason=reason)
                self.record.promoted = True
                self.observe(Note(f"promoted trial {outcome.best_trial} to champion: {reason} "
                                  f"({self.cfg.champion_dir / 'current'})"))
        if not self.record.promoted:
            self.observe(Note(f"champion kept: {reason}"))
        self.record.reason = reason
        if champion is not None:
            self.record.champion = champion.name
            self.record.champion_value = ev.candidate if self.record.promoted else ev.champion

    def _export(self, outcome: StudyOutcome) -> tuple[Path | None, str | None]:
        """The ONNX file of the night's best (``dino export`` through the launcher), when the
        run config exports (``export.enabled``)."""
        cfg = self.run_cfg
        if not cfg.export.enabled:
            return None, None
        assert outcome.best_trial is not None and outcome.best_checkpoint is not None
        study = open_study(cfg)
        spec = Path(study.trials[outcome.best_trial].user_attrs[attrs.SPEC_PATH])
        out = spec.parent / "champion_export" / "model.onnx"  # inside the trial's (mounted) results dir
        left = self._left()
        timeout = cfg.export.timeout_s if left is None else max(1.0, min(cfg.export.timeout_s, left))
        self.observe(Note(f"exporting trial {outcome.best_trial} to ONNX for the champion folder"))
        try:
            job, log = export_best(self.launcher, list(cfg.trainer.command), cfg.study.name, outcome.best_trial, spec,
                                   outcome.best_checkpoint, out, (outcome.best_checkpoint.resolve(),), timeout)
        except ValueError as exc:
            return None, f"no ONNX export ({exc}); set export.enabled: false to promote without one"
        if job.exit_code != 0 or not out.exists():
            return None, f"the ONNX export failed (exit {job.exit_code}); see {log}"
        return out, None

    # -- 7, 8. retention and the page ---------------------------------------------------------
    def _retention(self) -> None:
        removed = remove_old_checkpoints(self.run_cfg.storage_url, self.cfg.base_name, self.night,
                                         self.cfg.nightly.keep_nights)
        champions = prune_versions(self.cfg.champion_dir, self.cfg.nightly.champion.keep)
        self.record.removed_checkpoints, self.record.removed_champions = len(removed), len(champions)
        if removed or champions:
            self.observe(Note(f"retention: removed {len(removed)} checkpoint(s) of older nights and "
                              f"{len(champions)} old champion version(s)"))

    def _write_page(self) -> None:
        try:
            from automl.ui.report import write_nightly_page

            path = write_nightly_page(read_records(self.cfg.record_path), self.cfg.nightly_dir / "report",
                                      self.cfg.base_name, self.cfg.champion_metric)
            self.observe(Note(f"nightly page: {path}"))
        except Exception as exc:  # the night's outcome stands even if a figure cannot be drawn
            self.observe(Note(f"nightly page not written: {exc}", Level.WARNING))
