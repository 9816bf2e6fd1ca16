"""What a study hands back: best spec and checkpoint, a summary table, the report,
and checkpoint retention (only the best trials keep their ``.pth`` files)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from automl.config.run_config import RunConfig
from automl.progress import ProgressBoard
from automl.trial_paths import latest_checkpoint


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
    interrupted: bool = False
    failure_summary: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failure_summary is not None:
            return 3
        return 0 if self.best_trial is not None else 1


def trials_table(study: optuna.Study, metric: str) -> Table:
    table = Table(title=f"study {study.study_name}")
    for col in ("trial", "state", metric, "epochs", "device"):
        table.add_column(col, no_wrap=True)
    table.add_column("note", max_width=48, overflow="fold")
    table.add_column("params", max_width=72, overflow="fold")
    best = study.best_trial.number if _has_complete(study) else None
    for t in study.get_trials(deepcopy=False):
        value = "-" if t.value is None else f"{t.value:.4f}"
        note = ""
        if t.state == TrialState.PRUNED:
            note = f"pruned at epoch {t.user_attrs.get('prune_epoch', t.last_step)}"
        elif t.state == TrialState.FAIL:
            note = str(t.user_attrs.get("failure") or "failed")[:120]
        elif t.number == best:
            note = "best"
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t.params.items())
        style = {"PRUNED": "yellow", "FAIL": "red"}.get(t.state.name, "bold green" if t.number == best else "")
        table.add_row(str(t.number), t.state.name, value, str(len(t.intermediate_values)),
                      str(t.user_attrs.get("device", "")), note, params, style=style)
    return table


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def write_best(cfg: RunConfig, best: FrozenTrial) -> tuple[Path, Path | None]:
    """``best_spec.yaml`` and ``best.json`` in the study dir."""
    spec_src = Path(best.user_attrs["spec_path"])
    best_spec = cfg.study_dir / "best_spec.yaml"
    shutil.copyfile(spec_src, best_spec)
    checkpoint = latest_checkpoint(Path(best.user_attrs["results_dir"]))
    summary = {
        "study": cfg.study.name,
        "trial": best.number,
        "metric": cfg.metric.name,
        "value": best.value,
        "params": best.params,
        "epochs": {str(k): v for k, v in sorted(best.intermediate_values.items())},
        "results_dir": best.user_attrs["results_dir"],
        "spec": str(best_spec),
        "checkpoint": str(checkpoint) if checkpoint else None,
    }
    (cfg.study_dir / "best.json").write_text(json.dumps(summary, indent=2))
    return best_spec, checkpoint


def apply_retention(study: optuna.Study, keep_best: int | None, maximize: bool) -> list[Path]:
    """Delete checkpoints of finished trials outside the best ``keep_best``. Failed
    trials keep theirs: a retry may resume from them."""
    if keep_best is None:
        return []
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sorted((t for t in finished if t.state == TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=maximize)
    keep = {t.number for t in complete[:keep_best]}
    removed: list[Path] = []
    for t in finished:
        if t.number in keep or "results_dir" not in t.user_attrs:
            continue
        for ckpt in Path(t.user_attrs["results_dir"]).glob("train/*.pth"):
            ckpt.unlink(missing_ok=True)
            removed.append(ckpt)
    return removed


def finalize_study(
    cfg: RunConfig,
    study: optuna.Study,
    board: ProgressBoard,
    *,
    exporter: Callable[[FrozenTrial, Path, Path], Path | None] | None = None,
    interrupted: bool,
    failure_summary: str | None,
    elapsed_s: float,
) -> StudyOutcome:
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    outcome = StudyOutcome(cfg.study.name, counts, interrupted=interrupted, failure_summary=failure_summary)
    board.console.print(trials_table(study, cfg.metric.name))
    if failure_summary:
        board.console.print(f"[red]{failure_summary}[/]")
    if _has_complete(study):
        best = study.best_trial
        outcome.best_trial, outcome.best_value = best.number, best.value
        outcome.best_spec, outcome.best_checkpoint = write_best(cfg, best)
        if exporter is not None and outcome.best_checkpoint is not None and not interrupted:
            outcome.exported_model = exporter(best, outcome.best_spec, outcome.best_checkpoint)
        maximize = cfg.metric.resolved_direction() == "maximize"
        removed = apply_retention(study, cfg.retention.keep_checkpoints_of_best, maximize)
        if removed:
            board.note(f"retention: removed {len(removed)} checkpoint(s) of trials outside the best "
                       f"{cfg.retention.keep_checkpoints_of_best}")
    try:
        from automl.report import write_report

        outcome.report = write_report(cfg.storage_url, cfg.study.name, cfg.study_dir / "report",
                                      artifact_dir=cfg.workspace / "artifacts")
    except Exception as exc:  # the study's results stand even if a figure cannot be drawn
        board.note(f"[yellow]report not written: {exc}[/]")
    board.note(
        f"done in {elapsed_s:.0f}s: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed" + (" (interrupted; run the same command to resume)" if interrupted else "")
    )
    if outcome.best_trial is not None:
        board.note(f"best trial {outcome.best_trial}: {cfg.metric.name}={outcome.best_value:.4f}")
        board.note(f"best spec: {outcome.best_spec}")
        board.note(f"best checkpoint: {outcome.best_checkpoint}")
        if outcome.exported_model:
            board.note(f"exported model: {outcome.exported_model}")
    if outcome.report:
        board.note(f"report: {outcome.report}")
    return outcome
