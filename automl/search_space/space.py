"""The search space of a study: which spec fields a trial samples, and how.

Built from a train schema (its ``automl_default_parameters``, through the rules of
:mod:`automl.search_space.rules`), a space file's changes, and the run's context (fixed
facts such as ``dataset.num_classes`` that constraints need). Parameters are sampled
parents first, so ``> depends_on`` and DINO's ``num_select`` cap always hold.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import optuna

from automl.errors import ConfigError
from automl.search_space.constraints import cap_rules_for
from automl.search_space.dotted import get_path, parse_path
from automl.search_space.overrides import SpaceOverrides
from automl.search_space.param_factory import coerce, make_param
from automl.search_space.params import (
    ChoiceParam,
    DerivedParam,
    DynamicBound,
    FixedParam,
    NumberParam,
    Param,
    TrialLike,
)
from automl.search_space.rules import not_tuned_reason
from automl.search_space.schema import TAO_LIST_KINDS, TrainSchema, find_cycle, leaf_problem

SAMPLED_TYPES = ("int", "float", "bool", "categorical")
MAX_FEASIBILITY_COMBOS = 4096


class SearchSpace:
    def __init__(
        self,
        schema: TrainSchema,
        params: list[Param],
        excluded: dict[str, str],
        context: dict[str, Any],
        overrides: SpaceOverrides,
        template: Mapping[str, Any] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.schema = schema
        # one line per schema entry left out that the person should know about: fields the
        # loader cannot interpret, schema defaults no range can be derived for
        self.warnings = list(warnings or [])
        self.template = template or {}
        self.params = params  # parents before dependants
        self.excluded = excluded  # schema default parameters left out -> why
        self.context = context
        self.overrides = overrides
        self._by_path = {p.path: p for p in params}

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        schema: TrainSchema,
        overrides: SpaceOverrides | None = None,
        context: Mapping[str, Any] | None = None,
        template: Mapping[str, Any] | None = None,
    ) -> SearchSpace:
        """The space for ``schema`` changed by a space file; ConfigError names what is wrong.

        ``context``: values the run fixes (never sampled). Constraints read a parent that is
        not sampled from the context, else ``template`` (the spec template the trial
        renders onto), else the schema default.
        """
        overrides = overrides or SpaceOverrides()
        context = _check_context(schema, context or {})
        entries: dict[str, tuple[Any, str]] = {}
        excluded: dict[str, str] = {}

        if overrides.include_schema_defaults:
            for path in schema.default_parameters:
                field = schema.fields[path]
                reason = not_tuned_reason(path)
                if schema.is_disabled(path):
                    excluded[path] = "listed in the schema's automl_disabled_parameters"
                elif field.unsupported is not None:
                    excluded[path] = f"the schema's entry cannot be interpreted: {field.unsupported}"
                elif reason:
                    excluded[path] = reason
                elif field.type == "list" and field.tao_type in TAO_LIST_KINDS:
                    excluded[path] = (f"TAO's {field.tao_type} ({TAO_LIST_KINDS[field.tao_type]}): give values, "
                                      "or rule: epoch_fraction for lr_steps-like lists, in a space file")
                elif field.type not in SAMPLED_TYPES and (field.enum is None or field.type == "list"):
                    excluded[path] = f"a {field.type}: no rule samples it (give values in a space file)"
                else:
                    entries[path] = (None, "schema: automl_default_parameters")
        for path, ov in overrides.parameters.items():
            field = schema.field(path, ov.where)
            note = ""
            if schema.is_disabled(path) or field.automl_enabled is False:
                note = " (added: the schema disables it)"
            elif path not in schema.default_parameters:
                note = " (added)"
            entries[path] = (ov, ov.source + note)
            excluded.pop(path, None)
        for path, where in overrides.removed.items():
            schema.resolve(path, f"{where}: ")
            entries.pop(path, None)
            excluded[path] = f"removed by {where}"

        params: list[Param] = []
        for path, fixed in overrides.fixed.items():
            field = schema.resolve(path, fixed.where)
            value = fixed.value if field is None else coerce(field, fixed.value)
            problem = None if field is None or field.type in ("collection", "list") else leaf_problem(field, value)
            if problem:
                raise ConfigError(f"{fixed.where}{path}: fixed value {problem}")
            entries.pop(path, None)
            excluded.pop(path, None)
            if path not in context:
                params.append(FixedParam(path, "fixed", fixed.where.rstrip(": "), value=value))
        for path in context:
            if path in entries:
                entries.pop(path)
                excluded[path] = "set by the run (context), not sampled"

        warnings = list(schema.warnings)
        made: list[Param] = []
        for path, (ov, source) in entries.items():
            try:
                made.append(make_param(schema, path, ov, source))
            except ConfigError as exc:
                if ov is not None:  # the space file asks for it: its problem is the user's to fix
                    raise
                # only the schema lists it: leave it out, once, rather than refuse the whole space
                excluded[path] = f"no range can be derived from the schema: {exc}"
                warnings.append(f"{exc}; until then it is left out of the search space")
        params = made + params
        params += _apply_cap_rules(schema, params, context, template or {})
        space = cls(schema, _topological(params), excluded, context, overrides, template, warnings)
        space._check_feasible()
        space._check_fixed_caps()
        return space

    # ------------------------------------------------------------------ use
    def suggest(self, trial: TrialLike) -> dict[str, Any]:
        """Sample one parameter set: ``{dotted.path: value}``, parents before dependants.

        Includes fixed and derived values, not the context. Encoded parameters (weighted
        or ordered choices) also set a trial user attribute named by their path.
        """
        values: dict[str, Any] = {}
        lookup = self._lookup(values)
        for param in self.params:
            values[param.path] = param.suggest(trial, lookup)
        return values

    def decode(self, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameter set of a finished trial, from its ``trial.params``."""
        return self.suggest(optuna.trial.FixedTrial(dict(optuna_params)))

    def encode(self, assignments: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna params for ``study.enqueue_trial`` that reproduce ``assignments``."""
        unknown = [p for p in assignments if p not in self._by_path]
        if unknown:
            raise ConfigError(f"{unknown[0]} is not a parameter of this space")
        out: dict[str, Any] = {}
        lookup = self._lookup(assignments)
        for path, value in assignments.items():
            out.update(self._by_path[path].encode(value, lookup))
        return out

    def describe(self) -> list[dict[str, str]]:
        """Rows for the listing: parameter, type, range, scale, condition, source."""
        return [p.row() for p in self.params]

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.params]

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, path: str) -> Param:
        return self._by_path[path]

    def value_of(self, path: str, values: Mapping[str, Any] | None = None) -> Any:
        """A value as constraints see it: this trial's, else the context's, else the default."""
        return self._lookup(dict(values or {}))(path)

    def _lookup(self, values: Mapping[str, Any]):
        def lookup(path: str) -> Any:
            if path in values:
                return values[path]
            if path in self.context:
                return self.context[path]
            value = get_path(self.template, parse_path(path), None)
            return value if value is not None else self.schema.default_of(path)

        return lookup

    # ------------------------------------------------------------ feasibility
    def _check_feasible(self) -> None:
        """Every parent value the space can produce leaves its dependants a non-empty range."""
        for param in self.params:
            if not isinstance(param, NumberParam) or not param.bounds:
                continue
            needs = list(dict.fromkeys(param.parents()))
            options = [self._extremes(n) for n in needs]
            if any(o is None for o in options):
                continue
            combos = itertools.islice(itertools.product(*options), MAX_FEASIBILITY_COMBOS)
            for combo in combos:
                values = dict(zip(needs, combo))
                low, high = param.effective_range(self._lookup(values))
                if low > high:
                    given = ", ".join(f"{k} = {v}" for k, v in values.items())
                    rules = "; ".join(b.text for b in param.bounds)
                    raise ConfigError(
                        f"{param.path}: when {given}, no value in [{param.low:g}, {param.high:g}] "
                        f"satisfies {rules}; narrow the parent's range or widen {param.path}'s "
                        "in the space file"
                    )

    def _check_fixed_caps(self) -> None:
        """A fixed value under a network rule (num_select) must fit every tuned parent value."""
        for rule in cap_rules_for(self.schema.fields):
            target = self._by_path.get(rule.target)
            if not isinstance(target, FixedParam):
                continue
            options = [self._extremes(n) for n in rule.needs]
            if any(o is None for o in options):
                continue
            for combo in itertools.islice(itertools.product(*options), MAX_FEASIBILITY_COMBOS):
                values = dict(zip(rule.needs, combo))
                cap = rule.cap(self._lookup(values))
                if target.value > cap:
                    given = ", ".join(f"{k} = {v}" for k, v in values.items())
                    raise ConfigError(
                        f"{target.source}: {rule.target} is fixed at {target.value}, but when {given} "
                        f"it must be <= {rule.formula} = {cap}; lower it or tune it instead"
                    )

    def _extremes(self, path: str) -> list[Any] | None:
        param = self._by_path.get(path)
        if param is None:
            return [self.value_of(path)]
        if isinstance(param, NumberParam):
            return [param.low, param.high]  # a bounded parent stays inside these: conservative
        if isinstance(param, ChoiceParam):
            return list(param.choices)
        if isinstance(param, FixedParam):
            return [param.value]
        return None


def _check_context(schema: TrainSchema, context: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for path, value in context.items():
        field = schema.resolve(path, "context: ")
        if field is not None and field.type not in ("collection", "list"):
            value = coerce(field, value)
            problem = leaf_problem(field, value)
            if problem:
                raise ConfigError(f"context: {path}: {problem}")
        out[path] = value
    return out


def _apply_cap_rules(
    schema: TrainSchema, params: list[Param], context: Mapping[str, Any], template: Mapping[str, Any]
) -> list[Param]:
    """Network rules such as DINO's ``num_select <= min(num_queries, num_queries*num_classes-1)``."""
    by_path = {p.path: p for p in params}
    extra: list[Param] = []
    for rule in cap_rules_for(schema.fields):
        bound = DynamicBound("high", rule.needs, rule.cap, f"<= {rule.formula}", "network rule")
        target = by_path.get(rule.target)
        if isinstance(target, NumberParam):
            target.bounds = target.bounds + (bound,)
            target.source += f"; capped by the {schema.network or 'network'} rule"
        elif isinstance(target, ChoiceParam):
            raise ConfigError(
                f"{rule.target}: must stay <= {rule.formula}, which depends on other values; "
                "give it a range (min/max) rather than values"
            )
        elif target is None and any(n in by_path and n not in context for n in rule.needs):
            target_path, cap = rule.target, rule.cap
            default = context.get(target_path, get_path(template, parse_path(target_path), None))
            default = default if default is not None else schema.default_of(target_path)

            def derive(v, target_path=target_path, cap=cap):
                return min(v(target_path), cap(v))

            tuned = ", ".join(n for n in rule.needs if n in by_path)
            extra.append(
                DerivedParam(
                    rule.target, "derived",
                    f"{schema.network or 'network'} rule: keeps it valid while {tuned} is tuned",
                    needs=rule.needs, fn=derive, formula=f"min({default}, {rule.formula.removeprefix('min(')}",
                )
            )  # fmt: skip
    return extra


def _topological(params: list[Param]) -> list[Param]:
    """Parents first, otherwise in the given order; a depends_on cycle is an error."""
    by_path = {p.path: p for p in params}
    graph = {p.path: [q for q in p.parents() if q in by_path and q != p.path] for p in params}
    for p in params:
        if p.path in p.parents():
            raise ConfigError(f"{p.path} depends on itself (depends_on cycle); remove that depends_on")
    cycle = find_cycle(graph)
    if cycle:
        raise ConfigError(
            f"depends_on cycle {' -> '.join(cycle)}: sampling needs parents first; "
            "remove one of these depends_on entries"
        )
    done: dict[str, None] = {}

    def place(path: str) -> None:
        if path in done:
            return
        for parent in graph[path]:
            place(parent)
        done[path] = None

    for p in params:
        place(p.path)
    return [by_path[p] for p in done]
