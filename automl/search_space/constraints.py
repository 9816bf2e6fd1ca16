"""Cross-field rules while sampling and rendering: the trainer's rules, applied to a space.

The rules themselves (what is valid, with what severity) are the trainer's, in
:mod:`dino.config.rules`, and apply to any schema that has all their fields, so DINO's
rules also cover other DETR-family TAO networks with the same field names and never
touch networks without them. Here they become what a search space needs: a cap that
keeps a sampled value valid (:class:`CapRule`) and the checks a rendered spec must pass.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Collection

from dino.config.rules import Lookup, Violation, check_rules, num_select_limit, rules_for


@dataclasses.dataclass(frozen=True)
class CapRule:
    """``target <= cap(values)``: sampling caps the target so that the rule holds."""

    target: str
    needs: tuple[str, ...]
    cap: Callable[[Lookup], int]
    formula: str


def _num_select_cap(v: Lookup) -> int:
    """TAO's AutoML cap: no more boxes than queries, and within the trainer's limit."""
    queries, classes = v("model.num_queries"), v("dataset.num_classes")
    return min(queries, num_select_limit(queries, classes))


CAP_RULES = (
    # DINO (and TAO's AutoML): post-processing takes the top num_select of
    # num_queries x num_classes scores
    CapRule(
        target="model.num_select",
        needs=("model.num_queries", "dataset.num_classes"),
        cap=_num_select_cap,
        formula="min(model.num_queries, model.num_queries x dataset.num_classes - 1)",
    ),
)


def cap_rules_for(fields: Collection[str]) -> list[CapRule]:
    return [r for r in CAP_RULES if r.target in fields and all(n in fields for n in r.needs)]


def spec_errors(fields: Collection[str], lookup: Lookup) -> list[Violation]:
    """The errors (not the warnings, which preflight shows once) of the rules that apply
    to a schema with ``fields``, for the spec ``lookup`` reads."""
    return [v for v in check_rules(lookup, rules_for(fields)) if v.is_error]
