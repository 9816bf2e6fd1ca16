"""The closing lines of a run: did anything learn, what was pruned where, the best, and where
the pictures and the report are; rendered from :class:`automl.study.events.StudyClosed`.

Every value that comes from the study (names, paths, diagnoses) is printed as plain text,
never as console markup.
"""

from __future__ import annotations

from optuna.trial import TrialState
from rich.console import Console
from rich.text import Text

from automl.study.digest import StudyDigest, TrialStory
from automl.study.events import StudyClosed

IMPORTANCES_SHOWN = 4


def _numbers(trials: list[TrialStory] | list[int]) -> str:
    return ", ".join(f"#{t if isinstance(t, int) else t.number}" for t in trials)


def _pruned_line(digest: StudyDigest, pruner: str) -> str | None:
    if not digest.pruned:
        return None
    by = f" by {pruner}" if pruner else ""
    return f"pruned {len(digest.pruned)}{by}: {digest.describe_pruned()}"


def closing_lines(event: StudyClosed) -> list[tuple[str, str]]:
    """(text, style) per line, in the order they are printed."""
    d = event.digest
    n = len(d.trials)
    complete = len(d.of_state(TrialState.COMPLETE))
    counts = f"{complete} complete, {len(d.pruned)} pruned, {len(d.failed)} failed"
    head = f"done in {event.elapsed_s:.0f} s: {n} trial(s), {counts}; {len(d.learned)} learned"
    if event.interrupted:
        head += " (interrupted; run the same command to resume)"
    lines = [(head, "bold")]
    if d.learned:
        lines.append((f"learned: {_numbers(d.learned)} ({d.rule.describe()})", "green"))
    elif n:
        lines.append((f"none learned: {d.rule.describe()}", "yellow"))
    pruned = _pruned_line(d, event.pruner)
    if pruned:
        lines.append((pruned, ""))
    by_failure: dict[str, list[TrialStory]] = {}
    for t in d.failed:
        by_failure.setdefault(t.failure or "(no diagnosis recorded)", []).append(t)
    for failure, trials in by_failure.items():  # one line per diagnosis
        lines.append((f"failed: {_numbers(trials)} {failure}", "red"))
    if d.best is not None and d.best.score is not None:
        at = "" if d.best.best_epoch is None else f" (best epoch {d.best.best_epoch})"
        lines.append((f"best: trial {d.best.number}, {d.metric} {d.best.score:.4f}{at}", "bold green"))
    if d.importances.values:
        top = list(d.importances.values.items())[:IMPORTANCES_SHOWN]
        shown = ", ".join(f"{name} {share:.2f}" for name, share in top)
        more = len(d.importances.values) - len(top)
        lines.append((f"importances: {shown}" + (f" (+{more} more in the report)" if more > 0 else ""), ""))
    elif n:
        lines.append((f"importances left out: {d.importances.reason}", "yellow"))
    s = event.showcase
    if s is not None and s.ok:
        lines.append((f"pictures: {s.folder} ({len(s.pictures)} validation images, ground truth beside trial "
                      f"{s.trial}'s detections with score >= {s.conf_threshold:.2f})", ""))
    elif s is not None:
        lines.append((f"no pictures: {s.problem}", "yellow"))
    if event.report is not None:
        lines.append((f"report: {event.report}", "bold"))
    for label, path in (("best spec", event.best_spec), ("best checkpoint", event.best_checkpoint),
                        ("exported model", event.exported_model)):
        if path is not None:
            lines.append((f"{label}: {path}", ""))
    return lines


def render_closing(event: StudyClosed, console: Console) -> None:
    for text, style in closing_lines(event):
        console.print(Text.assemble(("automl ", "bold cyan"), (text, style)), highlight=False, soft_wrap=True)
