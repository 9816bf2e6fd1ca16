"""The trials of a study as one table: state, value, epochs, slot and who shared it, why
it ended; the caption says how many trials ran per slot and at once.

Cells and title are rich ``Text``: a study name, a failure message or a parameter value
is shown as it is, never read as console markup.
"""

from __future__ import annotations

from typing import Sequence

from optuna.trial import FrozenTrial, TrialState
from rich.table import Table
from rich.text import Text

from automl.study.attrs import TrialAttrs
from automl.study.packing import slot_usage


def trials_table(study_name: str, trials: Sequence[FrozenTrial], metric: str, best: int | None) -> Table:
    """``best``: the number of the best trial, marked in the table (None if none is complete)."""
    usage = slot_usage(trials)
    table = Table(title=Text(f"study {study_name}"),
                  caption=Text("; ".join(u.describe() for u in usage)) if usage else None)
    for col in ("trial", "state", metric, "epochs", "slot", "beside"):
        table.add_column(Text(col), no_wrap=True)
    table.add_column(Text("note"), max_width=48, overflow="fold")
    table.add_column(Text("params"), max_width=72, overflow="fold")
    for t in trials:
        recorded = TrialAttrs.of(t)
        value = "-" if t.value is None else f"{t.value:.4f}"
        note = ""
        if t.state == TrialState.PRUNED:
            epoch = recorded.prune_epoch if recorded.prune_epoch is not None else t.last_step
            note = f"pruned at epoch {epoch}"
            if recorded.pruned_by:
                note += f" by {recorded.pruned_by}"
        elif t.state == TrialState.FAIL:
            note = str(recorded.failure or "failed")[:120]
        elif t.number == best:
            note = "best"
        if recorded.oom_retry:
            note += ("; " if note else "") + "out of memory beside others: retried alone"
        beside = ",".join(str(n) for n in recorded.ran_beside) or ("-" if recorded.slot else "")
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t.params.items())
        style = {"PRUNED": "yellow", "FAIL": "red"}.get(t.state.name, "bold green" if t.number == best else "")
        cells = (str(t.number), t.state.name, value, str(len(t.intermediate_values)),
                 recorded.slot or recorded.device or "", beside, note, params)
        table.add_row(*(Text(cell) for cell in cells), style=style)
    return table


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
