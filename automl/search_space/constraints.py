"""Cross-field rules of a network that a TAO schema cannot express.

Each rule names the fields it involves and applies to any schema that has them all, so
DINO's rule also covers other DETR-family TAO networks with the same field names and
never touches networks without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

Lookup = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class CapRule:
    """``target <= cap(values)``: sampling caps the target; validation checks ``check``."""

    target: str
    needs: tuple[str, ...]
    cap: Callable[[Lookup], int]
    formula: str
    check: Callable[[Lookup], str | None]


@dataclasses.dataclass(frozen=True)
class CheckRule:
    """A relation a full spec must satisfy (checked when rendering, never sampled)."""

    fields: tuple[str, ...]
    check: Callable[[Lookup], str | None]


def _num_select_cap(v: Lookup) -> int:
    queries, classes = v("model.num_queries"), v("dataset.num_classes")
    return min(queries, queries * classes - 1)


def _num_select_check(v: Lookup) -> str | None:
    select, queries, classes = v("model.num_select"), v("model.num_queries"), v("dataset.num_classes")
    if not all(isinstance(x, int) for x in (select, queries, classes)):
        return None
    if select > queries * classes - 1:
        return (
            f"model.num_select {select} must be below model.num_queries x dataset.num_classes "
            f"= {queries} x {classes} = {queries * classes}: top-k selection would fail"
        )
    return None


def _levels_check(v: Lookup) -> str | None:
    indices, levels = v("model.return_interm_indices"), v("model.num_feature_levels")
    if isinstance(indices, list) and isinstance(levels, int) and len(indices) != levels:
        return (
            f"model.return_interm_indices has {len(indices)} entries but model.num_feature_levels "
            f"is {levels}: they must match"
        )
    return None


CAP_RULES = (
    # DINO (and TAO's AutoML): post-processing takes the top num_select of
    # num_queries x num_classes scores
    CapRule(
        target="model.num_select",
        needs=("model.num_queries", "dataset.num_classes"),
        cap=_num_select_cap,
        formula="min(model.num_queries, model.num_queries x dataset.num_classes - 1)",
        check=_num_select_check,
    ),
)
CHECK_RULES = (
    CheckRule(("model.return_interm_indices", "model.num_feature_levels"), _levels_check),
)


def cap_rules_for(fields: Mapping[str, Any]) -> list[CapRule]:
    return [r for r in CAP_RULES if r.target in fields and all(n in fields for n in r.needs)]


def spec_checks_for(fields: Mapping[str, Any]) -> list[Callable[[Lookup], str | None]]:
    checks = [r.check for r in cap_rules_for(fields)]
    checks += [r.check for r in CHECK_RULES if all(f in fields for f in r.fields)]
    return checks
