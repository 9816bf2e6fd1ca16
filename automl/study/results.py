"""What a study hands back: best spec and checkpoint, a summary table, the report with
the best trial's detections drawn on validation images, checkpoint retention (only the
best trials keep their ``.pth`` files), and the closing summary (:class:`StudyClosed`)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.config.run_config import RunConfig
from automl.study import attrs
from automl.study.best_checkpoint import CheckpointChoice, checkpoint_for_value
from automl.study.digest import digest_study
from automl.study.events import Level, Note, Observer, StudyClosed, TrialsSummary

if TYPE_CHECKING:
    from automl.study.handover_ahead import HandOverAhead
    from automl.study.showcase import Showcase


@dataclasses.dataclass
class StudyOutcome:
    study_name: str
    counts: dict[str, int]
    best_trial: int | None = None
    best_value: float | None = None
    best_spec: Path | None = None
    best_checkpoint: Path | None = None
    exported_model: Path | None = None
    report: Path | None = None
    showcase: Showcase | None = None  # the best trial's detections drawn on validation images
    interrupted: bool = False
    failure_summary: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failure_summary is not None:
            return 3
        return 0 if self.best_trial is not None else 1


def trial_value(trial: FrozenTrial) -> float:
    """The value of a COMPLETE trial (which always has one)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} ({trial.state.name}) has no value")
    return trial.value


def own_trials(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    """The trials this study ran, without those seeded from earlier studies as sampler
    history (:mod:`automl.study.warm_start`)."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if attrs.SEEDED_FROM not in t.user_attrs]


def best_own_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial this study ran (``study.best_trial`` may be a seeded one)."""
    complete = own_trials(study, (TrialState.COMPLETE,))
    if not complete:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(complete, key=trial_value)


def has_complete(study: optuna.Study) -> bool:
    return best_own_trial(study) is not None


def write_best(cfg: RunConfig, best: FrozenTrial) -> tuple[Path, CheckpointChoice]:
    """``best_spec.yaml`` and ``best.json`` in the study dir; the checkpoint is the one
    of the epoch the trial's value comes from (:mod:`automl.study.best_checkpoint`)."""
    spec_src = Path(best.user_attrs[attrs.SPEC_PATH])
    best_spec = cfg.study_dir / "best_spec.yaml"
    tmp = best_spec.with_name(f".{best_spec.name}.tmp")
    shutil.copyfile(spec_src, tmp)
    os.replace(tmp, best_spec)  # several workers may write it: a reader never sees half
    choice = checkpoint_for_value(best, cfg.metric.aggregate, cfg.metric.name)
    summary = {
        "study": cfg.study.name,
        "trial": best.number,
        "metric": cfg.metric.name,
        "value": best.value,
        "params": best.params,
        "epochs": {str(k): v for k, v in sorted(best.intermediate_values.items())},
        "results_dir": best.user_attrs[attrs.RESULTS_DIR],
        "spec": str(best_spec),
        "aggregate": cfg.metric.aggregate,
        **choice.as_dict(),
        "checkpoint_note": choice.note(),
    }
    out = cfg.study_dir / "best.json"
    tmp = out.with_name(f".best.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out)
    return best_spec, choice


def apply_retention(study: optuna.Study, keep_best: int | None) -> list[Path]:
    """Delete checkpoints of finished trials outside the best ``keep_best``, ranked the
    way the study ranks (its stored direction). Failed trials keep theirs: a retry may
    resume from them."""
    if keep_best is None:
        return []
    maximize = study.direction == StudyDirection.MAXIMIZE
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sorted((t for t in finished if t.state == TrialState.COMPLETE and attrs.SEEDED_FROM not in t.user_attrs),
                      key=trial_value, reverse=maximize)
    keep = {t.number for t in complete[:keep_best]}
    removed: list[Path] = []
    for t in finished:
        if t.number in keep or attrs.RESULTS_DIR not in t.user_attrs:
            continue
        for ckpt in Path(t.user_attrs[attrs.RESULTS_DIR]).glob("train/*.pth"):
            ckpt.unlink(missing_ok=True)
            removed.append(ckpt)
    return removed


def finalize_study(
    cfg: RunConfig,
    study: optuna.Study,
    observe: Observer,
    *,
    exporter: Callable[[FrozenTrial, Path, Path], Path | None] | None = None,
    showcase: Callable[[FrozenTrial, Path], Showcase | None] | None = None,
    ahead: HandOverAhead | None = None,
    interrupted: bool,
    failure_summary: str | None,
    elapsed_s: float,
) -> StudyOutcome:
    """Best spec and checkpoint, the exported model, the pictures of the best trial's
    detections (``showcase``: trial, checkpoint -> :class:`Showcase`), retention and the
    report; the summary goes to ``observe`` (:class:`StudyClosed` closes it). A hand-over
    that ``ahead`` ran for the same trial and checkpoint is taken instead of a new one."""
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in own_trials(study):  # trials seeded from earlier studies did not run here
        counts[t.state.name.lower()] += 1
    outcome = StudyOutcome(cfg.study.name, counts, interrupted=interrupted, failure_summary=failure_summary)
    best = best_own_trial(study)
    best_number = best.number if best is not None else None
    observe(TrialsSummary(study.study_name, cfg.metric.name, tuple(study.get_trials()), best_number))
    if failure_summary:
        observe(Note(failure_summary, Level.ERROR))
    if best is not None:
        outcome.best_trial, outcome.best_value = best.number, best.value
        outcome.best_spec, choice = write_best(cfg, best)
        outcome.best_checkpoint = choice.path
        if choice.note():
            observe(Note(f"best trial {best.number}: {choice.note()}", Level.WARNING))
        early = ahead.take(best.number, outcome.best_checkpoint) if ahead and outcome.best_checkpoint else None
        if early is not None and not interrupted:
            outcome.exported_model, outcome.showcase = early.exported_model, early.showcase
        elif outcome.best_checkpoint is not None and not interrupted:
            _hand_over(outcome, best, exporter, showcase)
    if ahead is not None:
        ahead.close()  # nothing may still read a checkpoint that retention removes
    if best is not None:
        removed = apply_retention(study, cfg.retention.keep_checkpoints_of_best)
        if removed:
            observe(Note(f"retention: removed {len(removed)} checkpoint(s) of trials outside the best "
                         f"{cfg.retention.keep_checkpoints_of_best}"))
    try:
        from automl.ui.report import write_report

        outcome.report = write_report(cfg.storage_url, cfg.study.name, cfg.study_dir / "report",
                                      artifact_dir=cfg.workspace / "artifacts")
    except Exception as exc:  # the study's results stand even if a figure cannot be drawn
        observe(Note(f"report not written: {exc}", Level.WARNING))
    observe(StudyClosed(
        digest_study(study, cfg.metric.name, own_trials(study)), elapsed_s, interrupted, pruner=pruner_text(cfg),
        best_spec=outcome.best_spec, best_checkpoint=outcome.best_checkpoint,
        exported_model=outcome.exported_model, report=outcome.report, showcase=outcome.showcase,
    ))  # fmt: skip
    return outcome


def _hand_over(outcome: StudyOutcome, best: FrozenTrial,
               exporter: Callable[[FrozenTrial, Path, Path], Path | None] | None,
               showcase: Callable[[FrozenTrial, Path], Showcase | None] | None) -> None:
    """The end-of-study hand-over of ``outcome``'s best checkpoint (``hand_over``)."""
    assert outcome.best_checkpoint is not None and outcome.best_spec is not None
    outcome.exported_model, outcome.showcase = hand_over(best, outcome.best_spec, outcome.best_checkpoint,
                                                         exporter, showcase)


def hand_over(best: FrozenTrial, spec: Path, checkpoint: Path,
              exporter: Callable[[FrozenTrial, Path, Path], Path | None] | None,
              showcase: Callable[[FrozenTrial, Path], Showcase | None] | None) -> tuple[Path | None, Showcase | None]:
    """The checkpoint's export (CPU: trace and ONNX Runtime check) and its pictures (a GPU
    inference job) side by side: one after the other they kept an H200 idle for 36 s at
    the end of the smoke study (bench/README.md). Returns the exported model and the
    pictures (None for a task that is off or produced nothing)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="hand-over") as pool:
        exported = pool.submit(exporter, best, spec, checkpoint) if exporter is not None else None
        pictures = pool.submit(showcase, best, checkpoint) if showcase is not None else None
        return (exported.result() if exported is not None else None,
                pictures.result() if pictures is not None else None)


def pruner_text(cfg: RunConfig) -> str:
    """The pruner as configured, e.g. ``median (warmup_epochs=2, startup_trials=2)``, or
    ``any of [not_learning (warmup_epochs=2); median (startup_trials=2)]`` for a composite."""
    return _plugin_text(cfg.pruner.name, cfg.pruner.options.model_dump(exclude_unset=True))


def _plugin_text(name: str, given: dict[str, Any]) -> str:
    given = dict(given)
    rules = given.pop("rules", None)
    text = name + (f" ({', '.join(f'{k}={v}' for k, v in given.items())})" if given else "")
    if isinstance(rules, (list, tuple)):  # a composite: its rules, each as configured
        inner = "; ".join(_plugin_text(str(r["name"]), dict(r.get("options") or {})) for r in rules)
        text += f" of [{inner}]"
    return text
