"""TAO's ``math_cond`` mini-language: one condition a field's value must satisfy.

Forms (spaces optional): ``> 0.0``, ``>= x``, ``< x``, ``<= x``, ``!= x``, ``> depends_on``
(compared with the value of the field named by ``depends_on``), ``/ N`` (a multiple of N)
and ``^ N`` (a power of N). Anything else is an error naming the field, so a typo in a
schema never turns into an unconstrained parameter.
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
_PATTERN = re.compile(
    r"^\s*(?P<op>>=|<=|!=|>|<|/|\^)\s*"
    r"(?P<operand>depends_on|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


class MathCondError(ValueError):
    """The text is not a condition we understand; the caller adds the field's name."""


@dataclasses.dataclass(frozen=True)
class MathCond:
    op: str  # one of COMPARISONS, "/" (multiple of), "^" (power of)
    operand: float | None  # None when relative to the depends_on parent
    text: str

    @property
    def relative(self) -> bool:
        return self.operand is None

    def holds(self, value: float, parent: float | None = None) -> bool:
        """Whether ``value`` satisfies the condition (``parent``: the depends_on value)."""
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


def parse_math_cond(text: str) -> MathCond:
    """Parse one condition; raises MathCondError with what is accepted."""
    if not isinstance(text, str):
        raise MathCondError(f"math_cond must be a string, got {text!r}")
    match = _PATTERN.match(text)
    if match is None:
        raise MathCondError(
            f"unknown math_cond {text!r}: expected '> x', '>= x', '< x', '<= x', '!= x', "
            "'> depends_on' (any comparison), '/ N' (multiple of N) or '^ N' (power of N)"
        )
    op, raw = match["op"], match["operand"]
    if raw == "depends_on":
        if op not in COMPARISONS:
            raise MathCondError(f"math_cond {text!r}: '{op}' cannot be relative to depends_on")
        return MathCond(op, None, text)
    operand = float(raw)
    if op == "/" and not operand > 0:
        raise MathCondError(f"math_cond {text!r}: the multiple must be positive")
    if op == "^" and (operand != int(operand) or operand < 2):
        raise MathCondError(f"math_cond {text!r}: the base of a power must be an integer >= 2")
    return MathCond(op, operand, text)


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
