"""TAO's ``math_cond`` mini-language: the conditions a field's value must satisfy.

One clause is ``> 0.0``, ``>= x``, ``< x``, ``<= x``, ``!= x``, ``> depends_on`` (compared
with the value of the field named by ``depends_on``), ``/ N`` (a multiple of N) or ``^ N``
(a power of N); spaces are optional. TAO's generator also writes several clauses in one
string, all of which must hold: ``> 0.0 <= 1.0`` (image classification's
``distill.loss_lambda``); ``and`` or a comma between clauses is accepted too. Anything
else raises :class:`MathCondError`, which the schema loader turns into a warning naming
the field (and an error only if that field is tuned), so a typo never becomes an
unconstrained parameter.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from typing import Any, Callable

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "!=": operator.ne,
}
_CLAUSE = re.compile(
    r"\s*(?P<sep>(?:and|&&|,)\s*)?(?P<op>>=|<=|!=|>|<|/|\^)\s*"
    r"(?P<operand>depends_on|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)
FORMS = ("'> x', '>= x', '< x', '<= x', '!= x', '> depends_on' (any comparison), '/ N' (multiple of N), "
         "'^ N' (power of N), or several of them in one string ('> 0.0 <= 1.0')")


class MathCondError(ValueError):
    """The text is not a condition we understand; the caller adds the field's name."""


@dataclasses.dataclass(frozen=True)
class Clause:
    op: str  # one of COMPARISONS, "/" (multiple of), "^" (power of)
    operand: float | None  # None when relative to the depends_on parent

    @property
    def relative(self) -> bool:
        return self.operand is None

    def holds(self, value: float, parent: float | None = None) -> bool:
        if self.op == "/":
            return _is_multiple(value, self.operand)
        if self.op == "^":
            return is_power(value, int(self.operand))
        other = parent if self.relative else self.operand
        if other is None:
            return True  # relative condition whose parent is unset: nothing to compare
        return COMPARISONS[self.op](value, other)

    def describe(self, parent: str | None = None) -> str:
        if self.op == "/":
            return f"multiple of {_fmt(self.operand)}"
        if self.op == "^":
            return f"power of {_fmt(self.operand)}"
        target = (parent or "depends_on") if self.relative else _fmt(self.operand)
        return f"{self.op} {target}"


@dataclasses.dataclass(frozen=True)
class MathCond:
    """All of ``clauses`` must hold; ``text`` is the schema's own spelling."""

    clauses: tuple[Clause, ...]
    text: str

    @property
    def relative(self) -> bool:
        return any(c.relative for c in self.clauses)

    @property
    def relative_clause(self) -> Clause | None:
        return next((c for c in self.clauses if c.relative), None)

    @property
    def comparisons(self) -> tuple[Clause, ...]:
        """Absolute ``<``/``<=``/``>``/``>=`` clauses: limits of an interval."""
        return tuple(c for c in self.clauses if not c.relative and c.op in COMPARISONS and c.op != "!=")

    @property
    def excluded(self) -> tuple[float, ...]:
        """Values ``!=`` rules out."""
        return tuple(c.operand for c in self.clauses if c.op == "!=" and c.operand is not None)

    @property
    def step(self) -> float | None:
        """N of a ``/ N`` clause."""
        return next((c.operand for c in self.clauses if c.op == "/"), None)

    @property
    def power_base(self) -> int | None:
        """N of a ``^ N`` clause."""
        return next((int(c.operand) for c in self.clauses if c.op == "^" and c.operand is not None), None)

    def holds(self, value: float, parent: float | None = None) -> bool:
        """Whether ``value`` satisfies every clause (``parent``: the depends_on value)."""
        return all(c.holds(value, parent) for c in self.clauses)

    def describe(self, parent: str | None = None) -> str:
        return " and ".join(c.describe(parent) for c in self.clauses)


def parse_math_cond(text: str) -> MathCond:
    """Parse one condition string; raises MathCondError with what is accepted."""
    if not isinstance(text, str):
        raise MathCondError(f"math_cond must be a string, got {text!r}")
    clauses: list[Clause] = []
    pos = 0
    while pos < len(text):
        match = _CLAUSE.match(text, pos)
        if match is None or (not clauses and match["sep"]):
            break
        clauses.append(_clause(text, match["op"], match["operand"]))
        pos = match.end()
    if not clauses or text[pos:].strip():
        raise MathCondError(f"unknown math_cond {text!r}: expected {FORMS}")
    if sum(c.relative for c in clauses) > 1:
        raise MathCondError(f"math_cond {text!r}: at most one clause can be relative to depends_on")
    ops = [c.op for c in clauses]
    if ops.count("/") > 1 or ops.count("^") > 1 or ("/" in ops and "^" in ops):
        raise MathCondError(f"math_cond {text!r}: one '/ N' or one '^ N' per condition, not both or twice")
    return MathCond(tuple(clauses), text)


def _clause(text: str, op: str, raw: str) -> Clause:
    if raw == "depends_on":
        if op not in COMPARISONS:
            raise MathCondError(f"math_cond {text!r}: '{op}' cannot be relative to depends_on")
        return Clause(op, None)
    operand = float(raw)
    if op == "/" and not operand > 0:
        raise MathCondError(f"math_cond {text!r}: the multiple must be positive")
    if op == "^" and (operand != int(operand) or operand < 2):
        raise MathCondError(f"math_cond {text!r}: the base of a power must be an integer >= 2")
    return Clause(op, operand)


def is_power(value: float, base: int) -> bool:
    """True for base**k with integer k (k may be negative, so 0.25 is a power of 2)."""
    if value <= 0:
        return False
    k = round(math.log(value, base))
    return math.isclose(value, float(base) ** k, rel_tol=1e-9)


def _is_multiple(value: float, step: float) -> bool:
    ratio = value / step
    return math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-9)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
