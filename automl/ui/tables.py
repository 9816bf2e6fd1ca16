"""The trials of a study as one table: state, value, epochs, device, why it ended.

Cells and title are rich ``Text``: a study name, a failure message or a parameter value
is shown as it is, never read as console markup.
"""

from __future__ import annotations

from typing import Sequence

from optuna.trial import FrozenTrial, TrialState
from rich.table import Table
from rich.text import Text

from automl.study.attrs import TrialAttrs


def trials_table(study_name: str, trials: Sequence[FrozenTrial], metric: str, best: int | None) -> Table:
    """``best``: the number of the best trial, marked in the table (None if none is complete)."""
    table = Table(title=Text(f"study {study_name}"))
    for col in ("trial", "state", metric, "epochs", "device"):
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
        elif t.state == TrialState.FAIL:
            note = str(recorded.failure or "failed")[:120]
        elif t.number == best:
            note = "best"
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t.params.items())
        style = {"PRUNED": "yellow", "FAIL": "red"}.get(t.state.name, "bold green" if t.number == best else "")
        cells = (str(t.number), t.state.name, value, str(len(t.intermediate_values)), recorded.device or "", note, params)
        table.add_row(*(Text(cell) for cell in cells), style=style)
    return table


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
