"""Preflight findings: one problem, where it is, and how to fix it.

Problems of one kind (say 3,000 missing image files) are folded into one finding with a
count and a few examples, so a broken dataset gives a readable report, not a flood.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable


class Severity(str, Enum):
    """``error`` stops a study before any GPU time; ``warning`` is shown and allowed."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One preflight result.

    ``setting`` is the dotted spec key that ``suggested_value`` applies to (for example
    ``dataset.num_classes`` -> 5), so a caller can offer or apply the fix; ``code`` is a
    stable identifier of the check (``num_classes_too_small``) for programs and tests.
    """

    severity: Severity
    what: str
    where: str
    fix: str
    suggested_value: Any = None
    setting: str | None = None
    code: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        text = f"[{self.severity.value}] {self.what} (at {self.where}). Fix: {self.fix}"
        if self.setting is not None and self.suggested_value is not None:
            text += f" [{self.setting} = {self.suggested_value!r}]"
        return text


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.is_error for f in findings)


@dataclass
class FindingGroup:
    """Collects examples of one kind of problem and emits a single :class:`Finding`."""

    code: str
    severity: Severity
    what: str  # plural noun phrase, e.g. "image files are missing"
    where: str  # the file or folder the examples live in
    fix: str
    max_examples: int = 3
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(example)

    def finding(self) -> Finding | None:
        if self.count == 0:
            return None
        more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return Finding(
            severity=self.severity,
            what=f"{self.count} {self.what}",
            where=f"{self.where}: {'; '.join(self.examples)}{more}",
            fix=self.fix,
            code=self.code,
        )
