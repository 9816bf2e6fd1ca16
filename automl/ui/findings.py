"""Preflight findings as a table: errors first, each with where it is and the fix.

Every cell is rich ``Text``: findings quote file names and COCO fields
(``[x, y, width, height]``) that console markup would swallow or choke on.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from automl.datasets.findings import Finding


def render_findings(findings: Iterable[Finding], console: Console | None = None, title: str = "Preflight") -> None:
    """Print findings as a rich table (errors first); a one-line note when there are none."""
    findings = list(findings)
    console = console or Console(stderr=False)
    if not findings:
        console.print(Text(f"{title}: no problems found.", style="green"))
        return
    table = Table(title=Text(title), show_lines=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("what")
    table.add_column("where", overflow="fold")
    table.add_column("fix")
    ordered = sorted(findings, key=lambda f: 0 if f.is_error else 1)
    for f in ordered:
        style = "bold red" if f.is_error else "yellow"
        fix = f.fix
        if f.setting is not None and f.suggested_value is not None:
            fix += f"\nuse: {f.setting} = {f.suggested_value!r}"
        table.add_row(Text(f.severity.value, style=style), Text(f.what), Text(f.where), Text(fix))
    console.print(table)
    errors = sum(f.is_error for f in findings)
    console.print(Text(f"{errors} error(s), {len(findings) - errors} warning(s)."))
