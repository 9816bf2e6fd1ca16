"""Cross-field rules of the DINO train spec, each stated here once, with its severity.

A rule relates fields that are valid one by one but not together (``model.num_select``
against ``model.num_queries`` x ``dataset.num_classes``). The trainer's spec loader and
model builder refuse what a rule calls an error; the orchestrator reads the same rules
in preflight (every finding), when it renders a trial's spec (errors) and when it caps
sampled values, so a spec is judged the same way before GPU time and inside the job.

This module is the spec contract the orchestrator may import: it needs nothing beyond
the standard library (no torch, no Optuna). Values come through a ``lookup`` from dotted
path to value, ``None`` when unknown; a rule with an unknown field says nothing, since
single-field checks (types, minimums) belong to the loader and the schema.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Collection, Iterable, Sequence

Lookup = Callable[[str], Any]


class Severity(str, enum.Enum):
    """``error``: the run cannot work and is refused before it starts; ``warning``: it
    runs with this trainer, but a user should know (for example NVIDIA's TAO container
    refuses it)."""

    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Violation:
    """One rule broken by one spec: what is wrong (with the values) and what to change.

    ``setting`` / ``suggested_value``: a change that satisfies the rule, when there is
    an obvious one, so a caller can offer it.
    """

    code: str
    severity: Severity
    message: str
    fix: str
    fields: tuple[str, ...]
    setting: str | None = None
    suggested_value: Any = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}"


@dataclasses.dataclass(frozen=True)
class SpecRule:
    """A relation between ``fields``; ``check`` returns the violation, or None."""

    code: str
    fields: tuple[str, ...]
    summary: str  # the rule in words, for failure diagnoses and docs
    fix: str  # what to change when a job failed on it
    check: Callable[[Lookup], Violation | None]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    items = [_int(v) for v in value]
    return None if any(v is None for v in items) else [v for v in items if v is not None]


# ----------------------------------------------------------------------------- num_select

NUM_SELECT_FIELDS = ("model.num_select", "model.num_queries", "dataset.num_classes")


def num_select_limit(num_queries: int, num_classes: int) -> int:
    """The largest ``model.num_select``: post-processing takes the top ``num_select`` of
    ``num_queries`` x ``num_classes`` scores, and TAO requires strictly fewer."""
    return num_queries * num_classes - 1


def _num_select(v: Lookup) -> Violation | None:
    select, queries, classes = (_int(v(f)) for f in NUM_SELECT_FIELDS)
    if select is None or queries is None or classes is None or queries < 1 or classes < 1:
        return None
    limit = num_select_limit(queries, classes)
    if 1 <= select <= limit:
        return None
    return Violation(
        "num_select_too_large" if select > limit else "num_select_too_small", Severity.ERROR,
        f"model.num_select ({select}) must be < model.num_queries * dataset.num_classes "
        f"({queries} * {classes} = {queries * classes}) and >= 1: top-k over the query scores "
        "fails at the first validation",
        f"set model.num_select to at most {min(queries, limit)}",
        NUM_SELECT_FIELDS, "model.num_select", max(1, min(queries, limit)),
    )  # fmt: skip


# ----------------------------------------------------------------------------- feature levels

LEVEL_FIELDS = ("model.num_feature_levels", "model.return_interm_indices")


def _feature_levels(v: Lookup) -> Violation | None:
    """The bundled trainer takes one level per backbone stage listed and adds strided 3x3
    convolutions for the levels beyond them (the DINO paper's 4-scale setup: stages 2-4
    plus one); fewer levels than stages cannot be built."""
    levels, indices = _int(v(LEVEL_FIELDS[0])), _int_list(v(LEVEL_FIELDS[1]))
    if levels is None or indices is None or levels < 1:
        return None
    stages = len(indices)
    if levels < stages:
        return Violation(
            "interm_levels_mismatch", Severity.ERROR,
            f"model.num_feature_levels is {levels} but must be at least the {stages} backbone stages "
            f"{indices} of model.return_interm_indices: each stage needs a feature level",
            f"set model.num_feature_levels to {stages}, or list {levels} stages in model.return_interm_indices",
            LEVEL_FIELDS, "model.num_feature_levels", stages,
        )  # fmt: skip
    if levels > stages:
        return Violation(
            "interm_levels_extra", Severity.WARNING,
            f"model.num_feature_levels {levels} exceeds the {stages} backbone stages {indices}: the "
            f"bundled trainer adds {levels - stages} strided level(s); NVIDIA's TAO container requires "
            "them equal",
            f"for TAO's container set model.num_feature_levels to {stages} or list {levels} stages",
            LEVEL_FIELDS, "model.num_feature_levels", stages,
        )  # fmt: skip
    return None


# ----------------------------------------------------------------------------- devices

GPU_FIELDS = ("train.num_gpus", "train.gpu_ids")


def check_gpu_ids(num_gpus: int, gpu_ids: Sequence[int], prefix: str = "train") -> Violation | None:
    """``gpu_ids`` against ``num_gpus``: one process per id, so with several GPUs one
    distinct id each; a single-GPU run uses ``gpu_ids[0]``. Ids count among the visible
    devices (after ``CUDA_VISIBLE_DEVICES``), from 0."""
    fields = (f"{prefix}.num_gpus", f"{prefix}.gpu_ids")
    ids, example = list(gpu_ids), list(range(num_gpus))
    if any(i < 0 for i in ids):
        return Violation(
            "gpu_ids_negative", Severity.ERROR, f"{prefix}.gpu_ids {ids} holds a negative device id",
            f"list device ids from 0 (e.g. {prefix}.gpu_ids={example})", fields, f"{prefix}.gpu_ids", example,
        )  # fmt: skip
    wanted = max(num_gpus, 1)
    if len(ids) == wanted and len(set(ids)) == wanted:
        return None
    if num_gpus <= 1 and ids:
        return Violation(
            "gpu_ids_unused", Severity.WARNING,
            f"{prefix}.gpu_ids lists {len(ids)} devices {ids} but {prefix}.num_gpus is {num_gpus}: only "
            f"device {ids[0]} is used",
            f"set {prefix}.num_gpus to {len(set(ids))} to use them all, or list one id", fields,
            f"{prefix}.num_gpus", len(set(ids)),
        )  # fmt: skip
    plural = "s" if wanted > 1 else ""
    return Violation(
        "gpu_ids_mismatch", Severity.ERROR,
        f"{prefix}.gpu_ids {ids} must list {wanted} device{plural} for {prefix}.num_gpus={num_gpus}: "
        f"{wanted} distinct device id{plural}, one per process",
        f"set {prefix}.gpu_ids={example}, or {prefix}.num_gpus={len(set(ids))}" if ids else f"set {prefix}.gpu_ids={example}",
        fields, f"{prefix}.gpu_ids", example,
    )  # fmt: skip


def _gpu_ids(v: Lookup) -> Violation | None:
    num_gpus, ids = _int(v(GPU_FIELDS[0])), _int_list(v(GPU_FIELDS[1]))
    if num_gpus is None or ids is None or num_gpus < 1:
        return None
    return check_gpu_ids(num_gpus, ids)


# ----------------------------------------------------------------------------- the rules

RULES: tuple[SpecRule, ...] = (
    SpecRule(
        "num_select", NUM_SELECT_FIELDS,
        "model.num_select must be below model.num_queries x dataset.num_classes (top-k post-processing)",
        "Set model.num_select < model.num_queries * dataset.num_classes (TAO's defaults: num_select 300, "
        "num_queries 300); the search space caps a tuned num_select accordingly.",
        _num_select,
    ),
    SpecRule(
        "feature_levels", LEVEL_FIELDS,
        "model.num_feature_levels must be at least len(model.return_interm_indices) (one level per "
        "backbone stage; NVIDIA's TAO container wants exactly that many)",
        "Give model.num_feature_levels at least one level per stage of model.return_interm_indices "
        "(exactly as many for TAO's container): DINO-4scale uses [1, 2, 3, 4] with 4.",
        _feature_levels,
    ),
    SpecRule(
        "gpu_ids", GPU_FIELDS,
        "train.gpu_ids must list train.num_gpus distinct device ids, counted from 0 among the visible devices",
        "List train.num_gpus device ids in train.gpu_ids, numbered 0..n-1 inside the job (CUDA_VISIBLE_DEVICES "
        "renumbers them); check the devices given to the launcher.",
        _gpu_ids,
    ),
)  # fmt: skip
RULES_BY_CODE = {rule.code: rule for rule in RULES}


def rules_for(fields: Collection[str]) -> list[SpecRule]:
    """The rules whose fields all exist in ``fields`` (a schema's or a config's paths), so
    another network without these fields is never judged by them."""
    return [rule for rule in RULES if all(f in fields for f in rule.fields)]


def check_rules(lookup: Lookup, rules: Iterable[SpecRule] = RULES) -> list[Violation]:
    """Every violation of ``rules`` by the values ``lookup`` gives, errors first."""
    found = [violation for rule in rules if (violation := rule.check(lookup)) is not None]
    return sorted(found, key=lambda violation: not violation.is_error)
