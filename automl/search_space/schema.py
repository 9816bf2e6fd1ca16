"""A TAO-format train schema: every field of the spec with its type, default and limits.

The schema is JSON Schema as TAO writes it (see ``../shared/DESIGN.md``): nested
``properties``, per-field ``type``/``default``/``minimum``/``maximum``/``enum``/
``option_weights``/``math_cond``/``depends_on``, and ``automl_default_parameters`` /
``automl_disabled_parameters`` lists of dotted paths, at the top and inside collections.
Nothing here is DINO-specific, so any TAO network's schema loads the same way.

The grammar covered is what TAO's generator emits across its published networks (the
``schemas/*.schema.json`` of NVIDIA's tao-skill-bank, read for this): the type names
``int``/``integer``, ``float``/``number``, ``bool``/``boolean``, ``string``,
``categorical``, ``ordered`` (options in order), ``ordered_int`` (int options in order),
``list``/``array``, TAO AutoML's list kinds ``list_1_backbone``, ``list_1_normal``,
``list_2``, ``list_3`` (lists TAO fills from its own per-network tables),
``subset_list``/``optional_list`` (lists of ``enum`` items), ``collection``/``object``;
``anyOf``/``oneOf`` of types and type lists; per-element ``minimum``/``maximum`` lists;
JSON Schema's ``exclusiveMinimum``/``exclusiveMaximum`` (number or boolean forms) and
``pattern``; compound ``math_cond`` (:mod:`automl.search_space.math_cond`);
comma-separated ``depends_on`` parents; TAO's CSV spellings ``valid_min``/``valid_max``/
``valid_options``. A field the loader still cannot interpret does not stop the schema:
it keeps its default (it can be set and rendered), is left out of the search space, and
is reported once in :attr:`TrainSchema.skipped`; tuning it is an error that says why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

from automl.errors import ConfigError, SchemaError
from automl.search_space.dotted import did_you_mean, format_path, get_path, parse_path
from automl.search_space.math_cond import MathCond, MathCondError, parse_math_cond
from automl.search_space.tao_json import load_tao_json, parse_tao_json

# TAO's type names and their JSON Schema spellings, normalised to ours
TYPE_NAMES = {
    "float": "float", "number": "float",
    "int": "int", "integer": "int", "ordered_int": "int",
    "bool": "bool", "boolean": "bool",
    "string": "string", "str": "string",
    "categorical": "categorical", "enum": "categorical", "ordered": "categorical",
    "list": "list", "array": "list",
    "list_1_backbone": "list", "list_1_normal": "list", "list_2": "list", "list_3": "list",
    "subset_list": "list", "optional_list": "list",
    "collection": "collection", "object": "collection", "dict": "collection",
}  # fmt: skip
# TAO AutoML's list kinds: TAO fills them from per-network tables in its own code
# (backbone block ranges, image-size multiples, lr_steps under num_epochs), which a schema
# does not carry; ours are tuned only through a space file (values or rule: epoch_fraction).
TAO_LIST_KINDS = {
    "list_1_backbone": "consecutive block indices TAO draws per backbone",
    "list_1_normal": "consecutive indices TAO draws from a fixed range",
    "list_2": "several sorted values TAO draws under a parent (image size or num_epochs)",
    "list_3": "a pair of equal values TAO derives from an image size",
    "subset_list": "a subset of its enum",
    "optional_list": "empty or items of its enum",
}
_PY_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"),
             (dict, "collection"))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SchemaField:
    """One node of the schema. ``path`` has no list indices (``dataset.train_data_sources``)."""

    path: str
    type: str  # a value of TYPE_NAMES, or "any" when the schema does not say
    default: Any = None
    minimum: float | None = None  # None: no lower limit given
    maximum: float | None = None  # None: no upper limit given; math.inf: TAO's Infinity
    enum: tuple[Any, ...] | None = None
    option_weights: tuple[float, ...] | None = None  # aligned with enum
    math_cond: MathCond | None = None
    depends_on: str | None = None
    parent_param: bool = False
    automl_enabled: bool | None = None
    popular: bool = False
    children: Mapping[str, SchemaField] = dataclasses.field(default_factory=dict)
    open: bool = False  # a collection that accepts keys the schema does not list
    item: SchemaField | None = None  # for lists of mappings: what one item looks like
    exclusive_minimum: bool = False  # the minimum itself is not allowed (JSON Schema)
    exclusive_maximum: bool = False
    pattern: str | None = None  # a string must contain a match (JSON Schema)
    tao_type: str | None = None  # the schema's own type name where it says more than ours ("list_2")
    alternatives: tuple[str, ...] = ()  # other types the value may have (anyOf / oneOf / a type list)
    item_minimum: tuple[float, ...] | None = None  # a list's per-element limits
    item_maximum: tuple[float, ...] | None = None
    parents: tuple[str, ...] = ()  # every depends_on field (TAO may list several, comma-separated)
    unsupported: str | None = None  # why the loader could not interpret it (then: not tunable)

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_numeric(self) -> bool:
        return self.type in ("int", "float")


class TrainSchema:
    """The fields of a train spec, looked up by dotted path."""

    def __init__(
        self,
        root: SchemaField,
        default_parameters: tuple[str, ...],
        disabled_parameters: frozenset[str],
        network: str | None,
        source: str,
        skipped: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.default_parameters = default_parameters
        self.disabled_parameters = disabled_parameters
        self.network = network
        self.source = source
        self.fields: dict[str, SchemaField] = {}
        # dotted path -> why it cannot be interpreted (fields, and default-parameter entries)
        self.skipped: dict[str, str] = dict(skipped or {})
        self._index(root)

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path) -> TrainSchema:
        """Load a TAO train schema file; SchemaError names the bad field."""
        return cls.from_dict(load_tao_json(path), source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str = "<schema>") -> TrainSchema:
        return cls.from_dict(parse_tao_json(text, source), source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<schema>") -> TrainSchema:
        ctx = _ParseContext(source, frozenset(_all_paths(data)))
        root = _parse_node("", data, data.get("default"), ctx, is_root=True)
        tao = data.get("x_tao_schema") if isinstance(data.get("x_tao_schema"), dict) else {}
        defaults = []
        for path in dict.fromkeys(ctx.lists["automl_default_parameters"]):
            if path in ctx.paths:
                defaults.append(path)
            else:
                ctx.skipped[path] = (f"is listed in automl_default_parameters but is not a field of the "
                                     f"schema{did_you_mean(path, ctx.paths)}")
        schema = cls(
            root,
            default_parameters=tuple(defaults),
            disabled_parameters=frozenset(ctx.lists["automl_disabled_parameters"]),
            network=tao.get("network_arch") or tao.get("model"),
            source=source,
            skipped=ctx.skipped,
        )
        schema._check_cycles()
        return schema

    def _index(self, node: SchemaField) -> None:
        for child in node.children.values():
            self.fields[child.path] = child
            self._index(child)

    def _check_cycles(self) -> None:
        # automl_disabled_parameters is shared by all of a network's actions in TAO's
        # files, so it may name fields of other actions (evaluate, export): not an error.
        graph = {p: list(f.parents) for p, f in self.fields.items() if f.parents and f.unsupported is None}
        cycle = find_cycle(graph)
        if cycle:
            raise SchemaError(
                f"{self.source}: depends_on cycle {' -> '.join(cycle)}: a parameter cannot "
                "depend on itself; remove one of these depends_on entries"
            )

    @property
    def warnings(self) -> list[str]:
        """One line per entry the loader left out (see :attr:`skipped`), for the person."""
        return [f"{self.source}: {path!r} {why}; it is left out of the search space (it can still be set with "
                "fixed:, but tuning it is an error until the schema entry is fixed)"
                for path, why in self.skipped.items()]

    # ----------------------------------------------------------------- lookup
    def __contains__(self, path: str) -> bool:
        try:
            self.resolve(path)
        except ConfigError:
            return False
        return True

    def field(self, path: str, where: str = "") -> SchemaField:
        """The field at a dotted path (list indices allowed); ConfigError with did-you-mean."""
        field = self.resolve(path, where)
        if field is None:
            raise ConfigError(
                f"{where}{path!r} lies inside a collection the schema leaves open, so it has "
                "no type or range: it can be set but not tuned"
            )
        return field

    def resolve(self, path: str, where: str = "") -> SchemaField | None:
        """Like :meth:`field` but returns None for keys below an open collection."""
        try:
            tokens = parse_path(path)
        except ValueError as exc:
            raise ConfigError(f"{where}{exc}") from None
        node = self.root
        for i, token in enumerate(tokens):
            here = format_path(tokens[:i]) or "the top level"
            if isinstance(token, int):
                if node.type != "list":
                    raise ConfigError(f"{where}{path!r}: {here} is not a list, it cannot be indexed")
                if node.item is None:
                    return None
                node = node.item
                continue
            if node.type == "list":
                raise ConfigError(
                    f"{where}{path!r}: {here} is a list; index it, e.g. '{here}[0].{token}'"
                )
            if node.type != "collection":
                raise ConfigError(f"{where}{path!r}: {here} is a {node.type}, it has no key {token!r}")
            child = node.children.get(token)
            if child is None:
                if node.open:
                    return None
                hint = did_you_mean(token, node.children) or did_you_mean(path, self.fields)
                raise ConfigError(f"{where}{path!r}: {here} has no key {token!r}{hint}")
            node = child
        return node

    def default_of(self, path: str) -> Any:
        """The schema default at a path (from the field, else from the enclosing default)."""
        field = self.resolve(path)
        if field is not None and field.default is not None:
            return field.default
        return get_path(self.root.default or {}, parse_path(path), None)

    def default_spec(self) -> dict[str, Any]:
        """A spec with every field at its default: a template for networks that ship none."""
        return _defaults_of(self.root)

    def is_disabled(self, path: str) -> bool:
        return path in self.disabled_parameters

    # ------------------------------------------------------------- validation
    def spec_problems(self, spec: Mapping[str, Any]) -> list[str]:
        """Every key of ``spec`` not in the schema and every value that breaks its field."""
        problems: list[str] = []
        _check_value(self.root, spec, (), spec, problems)
        return problems


# ---------------------------------------------------------------------- parsing
@dataclasses.dataclass
class _ParseContext:
    source: str
    paths: frozenset[str]  # every dotted field path, for depends_on checks
    lists: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {"automl_default_parameters": [], "automl_disabled_parameters": []})
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _all_paths(node: Any, prefix: str = "") -> list[str]:
    props = node.get("properties") if isinstance(node, dict) else None
    out: list[str] = []
    for name, child in (props or {}).items() if isinstance(props, dict) else ():
        if isinstance(child, dict):
            path = f"{prefix}.{name}" if prefix else name
            out += [path, *_all_paths(child, path)]
    return out


def _parse_node(
    path: str,
    node: Mapping[str, Any],
    inherited_default: Any,
    ctx: _ParseContext,
    is_root: bool = False,
) -> SchemaField:
    where = f"{ctx.source}: field {path!r}" if path else ctx.source
    for key in ctx.lists:
        value = node.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"{where}: {key} must be a list of dotted paths")
        ctx.lists[key].extend(value)

    props = node.get("properties")
    if props is not None and not isinstance(props, dict):
        raise SchemaError(f"{where}: 'properties' must be an object")
    default = node.get("default", inherited_default)
    children: dict[str, SchemaField] = {}
    for name, child in (props or {}).items():
        if not isinstance(child, dict):
            if name.startswith("automl_"):  # TAO's files keep a stray list here; not a field
                if name in ctx.lists and isinstance(child, list):
                    ctx.lists[name].extend(c for c in child if isinstance(c, str))
                continue
            raise SchemaError(f"{where}: property {name!r} must be an object, got {type(child).__name__}")
        child_default = default.get(name) if isinstance(default, dict) else None
        children[name] = _parse_node(f"{path}.{name}" if path else name, child, child_default, ctx)

    try:
        attrs = _interpret(path, node, default, props is not None or is_root, where, ctx)
    except SchemaError as exc:
        if is_root:
            raise
        reason = str(exc).removeprefix(f"{where}: ")
        ctx.skipped[path] = f"cannot be interpreted: {reason}"
        kind = "collection" if props is not None else _infer_type(default)
        attrs = {"type": kind, "unsupported": reason}
    kind = attrs["type"]
    item = attrs.pop("item", None)
    if item is None and kind == "list" and isinstance(default, list) and default and isinstance(default[0], dict):
        keys = {k: v for d in default if isinstance(d, dict) for k, v in d.items()}
        item = SchemaField(
            path=f"{path}[]",
            type="collection",
            default=default[0],
            children={k: SchemaField(f"{path}[].{k}", _infer_type(v), v) for k, v in keys.items()},
        )
    return SchemaField(
        path=path,
        default=default,
        parent_param=str(node.get("parent_param", "")).upper() == "TRUE",
        automl_enabled=_flag(node.get("automl_enabled")),
        popular=node.get("popular") is True,
        children=children,
        open=kind == "collection" and not children,
        item=item,
        **attrs,
    )


def _interpret(path: str, node: Mapping[str, Any], default: Any, has_props: bool, where: str,
               ctx: _ParseContext) -> dict[str, Any]:
    """The typed attributes of one field; SchemaError when some part cannot be read."""
    kind, tao_type, alternatives = _type_of(node, default, has_props, where)
    out: dict[str, Any] = {"type": kind, "tao_type": tao_type, "alternatives": alternatives}
    if kind == "list":
        out["item_minimum"] = _item_bounds(node, "minimum", where)
        out["item_maximum"] = _item_bounds(node, "maximum", where)
    lo_key, hi_key = ("minimum", "maximum") if kind != "list" else ("", "")
    minimum = _bound(node, lo_key, where) if lo_key else None
    maximum = _bound(node, hi_key, where) if hi_key else None
    # JSON Schema: exclusiveMinimum is the limit itself (draft 6+) or a flag on minimum (draft 4)
    exclusive = {}
    for key, side in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = node.get(key)
        if flag is None or flag is False:
            continue
        if flag is True:
            if (minimum if side == "minimum" else maximum) is None:
                raise SchemaError(f"{where}: {key} true needs a {side}")
        else:
            limit = _number_value(flag, key, where)
            if side == "minimum":
                minimum = limit if minimum is None else max(minimum, limit)
            else:
                maximum = limit if maximum is None else min(maximum, limit)
        exclusive[side] = True
    if minimum is not None and maximum is not None and minimum > maximum:
        raise SchemaError(
            f"{where}: minimum {minimum:g} is greater than maximum {maximum:g}; swap or fix them"
        )
    if minimum == math.inf or maximum == -math.inf:
        raise SchemaError(f"{where}: minimum cannot be Infinity (nor maximum -Infinity)")
    out.update(minimum=minimum, maximum=maximum, exclusive_minimum=exclusive.get("minimum", False),
               exclusive_maximum=exclusive.get("maximum", False))

    enum = _enum(node, kind, where)
    out["enum"] = enum
    out["option_weights"] = _option_weights(node.get("option_weights"), enum, where)

    math_cond = None
    if node.get("math_cond") is not None:
        try:
            math_cond = parse_math_cond(node["math_cond"])
        except MathCondError as exc:
            raise SchemaError(f"{where}: {exc}") from None
    out["math_cond"] = math_cond
    raw_parents = node.get("depends_on")
    parents: tuple[str, ...] = ()
    if raw_parents is not None:
        if not isinstance(raw_parents, str) or not raw_parents.strip():
            raise SchemaError(f"{where}: depends_on must be a dotted path string (or several, comma-separated)")
        parents = tuple(p.strip() for p in raw_parents.split(",") if p.strip())
        for parent in parents:
            if parent not in ctx.paths:
                raise SchemaError(f"depends_on {parent!r}, which is not a field of the schema"
                                  f"{did_you_mean(parent, ctx.paths)}")
    if math_cond is not None and math_cond.relative and len(parents) != 1:
        raise SchemaError(f"{where}: math_cond {math_cond.text!r} needs exactly one depends_on field, "
                          f"got {len(parents)}")
    out["parents"] = parents
    out["depends_on"] = parents[0] if len(parents) == 1 else None
    pattern = node.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise SchemaError(f"{where}: pattern {pattern!r} is not a regular expression ({exc})") from None
    out["pattern"] = pattern
    return out


def _type_of(node: Mapping[str, Any], default: Any, has_props: bool, where: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(our type, TAO's own name when it says more, the other types a value may have)."""
    raw = node.get("type")
    options = node.get("anyOf", node.get("oneOf"))
    if isinstance(raw, list):  # JSON Schema's ["string", "null"]
        options = [{"type": t} for t in raw]
        raw = None
    if raw is None and isinstance(options, list) and options:
        kinds = []
        for option in options:
            t = option.get("type") if isinstance(option, dict) else None
            if t == "null":
                continue
            if t not in TYPE_NAMES:
                raise SchemaError(f"{where}: anyOf/oneOf alternative {json_text(option)} has no type we know")
            kinds.append(TYPE_NAMES[t])
        kinds = list(dict.fromkeys(kinds))
        if not kinds:
            raise SchemaError(f"{where}: anyOf/oneOf allows only null")
        primary = _infer_type(default)
        if primary == "int" and "int" not in kinds and "float" in kinds:
            primary = "float"
        if primary not in kinds:
            primary = kinds[0]
        return primary, None, tuple(k for k in kinds if k != primary)
    if raw is None:
        return ("collection" if has_props else _infer_type(default)), None, ()
    if raw in TYPE_NAMES:
        kind = TYPE_NAMES[raw]
        return kind, (raw if raw in TAO_LIST_KINDS or raw in ("ordered_int", "ordered") else None), ()
    raise SchemaError(
        f"{where}: unknown type {raw!r}{did_you_mean(str(raw), TYPE_NAMES)}; "
        f"expected one of {sorted(TYPE_NAMES)}"
    )


def json_text(value: Any) -> str:
    return json.dumps(value)[:80]


def _flag(value: Any) -> bool | None:
    """TAO's booleans: true/false, or the strings "TRUE"/"FALSE" of its CSV-era files."""
    if isinstance(value, str) and value.upper() in ("TRUE", "FALSE"):
        return value.upper() == "TRUE"
    return value if isinstance(value, bool) else None


def _enum(node: Mapping[str, Any], kind: str, where: str) -> tuple[Any, ...] | None:
    enum = node.get("enum", node.get("valid_options"))
    if enum is None and "const" in node:
        enum = [node["const"]]
    if enum is None:
        return None
    if isinstance(enum, str):  # TAO's CSV form "1,3"
        enum = [e.strip() for e in enum.split(",") if e.strip()]
    if not isinstance(enum, list) or not enum:
        raise SchemaError(f"{where}: enum must be a non-empty list")
    if kind == "int":
        try:
            enum = [int(e) if not isinstance(e, bool) and float(e) == int(float(e)) else e for e in enum]
        except (TypeError, ValueError):
            raise SchemaError(f"{where}: an int field's enum must list integers, got {enum}") from None
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in enum):
            raise SchemaError(f"{where}: an int field's enum must list integers, got {enum}")
    return tuple(enum)


def _number_value(value: Any, key: str, where: str) -> float:
    if isinstance(value, str):  # TAO's CSV spellings: "inf", "-inf", "1e-4"
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where}: {key} must be a number or Infinity, got {value!r}")
    return value


def _bound(node: Mapping[str, Any], key: str, where: str) -> float | None:
    value = node.get(key, node.get({"minimum": "valid_min", "maximum": "valid_max"}[key]))
    if value is None or value == "":
        return None
    return _number_value(value, key, where)


def _item_bounds(node: Mapping[str, Any], key: str, where: str) -> tuple[float, ...] | None:
    """A list's ``minimum``/``maximum``: one per element (a list) or one for all (a number)."""
    value = node.get(key, node.get({"minimum": "valid_min", "maximum": "valid_max"}[key]))
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return tuple(_number_value(v, key, where) for v in value)
    return (_number_value(value, key, where),)


def _defaults_of(field: SchemaField) -> dict[str, Any]:
    if field.open:
        return dict(field.default) if isinstance(field.default, dict) else {}
    out: dict[str, Any] = {}
    for name, child in field.children.items():
        if child.type == "collection":
            out[name] = _defaults_of(child)
        elif child.default is not None:
            out[name] = child.default
    return out


def _option_weights(raw: Any, enum: tuple | None, where: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    if enum is None:
        raise SchemaError(f"{where}: option_weights needs an enum to weight")
    if isinstance(raw, dict):
        unknown = [k for k in raw if k not in enum and str(k) not in map(str, enum)]
        if unknown:
            raise SchemaError(f"{where}: option_weights names {unknown}, which are not in its enum")
        raw = [raw.get(v, raw.get(str(v), 0.0)) for v in enum]
    if not isinstance(raw, list) or len(raw) != len(enum):
        raise SchemaError(f"{where}: option_weights must give one weight per enum value ({len(enum)})")
    return check_weights(raw, where)


def check_weights(raw: list, where: str, error: type[Exception] = SchemaError) -> tuple[float, ...]:
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 or w == math.inf
           for w in raw):  # fmt: skip
        raise error(f"{where}: weights must be finite numbers >= 0, got {raw}")
    if sum(raw) <= 0:
        raise error(f"{where}: weights must not all be zero")
    return tuple(float(w) for w in raw)


def _infer_type(default: Any) -> str:
    for py, name in _PY_TYPES:
        if isinstance(default, py):
            return name
    return "any"


def find_cycle(graph: Mapping[str, list[str]]) -> list[str]:
    """A cycle in ``node -> parents`` as a path list (first node repeated at the end), or []."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for parent in graph.get(node, ()):
            if state.get(parent) == 1:
                return stack[stack.index(parent):] + [parent]
            if state.get(parent) is None:
                found = visit(parent)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


# ------------------------------------------------------------------- validation
def _check_value(field: SchemaField, value: Any, tokens: tuple, spec: Mapping, problems: list[str]) -> None:
    where = format_path(tokens) or "the spec"
    if value is None:
        if field.default is not None and field.type not in ("any", "collection"):
            problems.append(f"{where}: null is not allowed here (a {field.type}, default {field.default!r})")
        return
    if field.type == "collection":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return
        for key, sub in value.items():
            child = field.children.get(key)
            if child is None:
                if not field.open:
                    problems.append(
                        f"{format_path(tokens + (key,))}: unknown key {key!r} under {where}"
                        f"{did_you_mean(str(key), field.children)}"
                    )
                continue
            _check_value(child, sub, tokens + (key,), spec, problems)
        return
    if field.type == "list" and field.unsupported is None:
        problem = _list_problem(field, value)
        if problem:
            problems.append(f"{where}: {problem}")
        elif field.item is not None:
            for i, sub in enumerate(value):
                _check_value(field.item, sub, tokens + (i,), spec, problems)
        return
    problem = leaf_problem(field, value, spec)
    if problem:
        problems.append(f"{where}: {problem}")


def _list_problem(field: SchemaField, value: Any) -> str | None:
    if not isinstance(value, list):
        if any(_has_type(k, value) for k in field.alternatives):
            return None
        return f"expected a list, got {type(value).__name__}"
    if field.enum is not None:
        bad = [v for v in value if v not in field.enum]
        if bad:
            return f"{bad[0]!r} is not one of {list(field.enum)}{did_you_mean(str(bad[0]), map(str, field.enum))}"
    for limits, below in ((field.item_minimum, True), (field.item_maximum, False)):
        if not limits:
            continue
        for i, v in enumerate(value):
            if (len(limits) > 1 and i >= len(limits)) or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            limit = limits[i] if len(limits) > 1 else limits[0]
            if (v < limit) if below else (v > limit):
                return f"element {i} ({v!r}) is {'below the minimum' if below else 'above the maximum'} {limit:g}"
    return None


def _has_type(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("string", "categorical"):
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list)
    if kind == "collection":
        return isinstance(value, dict)
    return True


def leaf_problem(field: SchemaField, value: Any, spec: Mapping | None = None) -> str | None:
    """Why ``value`` is not valid for a scalar (or list) field, or None. ``spec`` gives
    depends_on values. A field the loader could not interpret accepts anything."""
    if field.unsupported is not None:
        return None
    kind = field.type
    if kind == "list":
        return _list_problem(field, value)
    if field.alternatives and not _has_type(kind, value):
        if any(_has_type(k, value) for k in field.alternatives):
            return None  # another alternative of an anyOf: its own limits are not ours
    if kind == "bool" and not isinstance(value, bool):
        return f"expected true or false, got {value!r}"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an integer, got {value!r}"
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"expected a number, got {value!r}"
    if kind == "string" and not isinstance(value, str):
        return f"expected a string, got {value!r}"
    if field.enum is not None and value not in field.enum:
        return f"{value!r} is not one of {list(field.enum)}{did_you_mean(str(value), map(str, field.enum))}"
    if field.pattern is not None and isinstance(value, str) and re.search(field.pattern, value) is None:
        return f"{value!r} does not match the pattern {field.pattern!r}"
    if not field.is_numeric or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if field.minimum is not None and (value < field.minimum or (field.exclusive_minimum and value == field.minimum)):
        return f"{value!r} is {'not above' if field.exclusive_minimum else 'below'} the minimum {field.minimum:g}"
    if field.maximum is not None and (value > field.maximum or (field.exclusive_maximum and value == field.maximum)):
        return f"{value!r} is {'not below' if field.exclusive_maximum else 'above'} the maximum {field.maximum:g}"
    cond = field.math_cond
    if cond is not None:
        parent = None
        if cond.relative and spec is not None and field.depends_on is not None:
            parent = get_path(spec, parse_path(field.depends_on), None)
            if not isinstance(parent, (int, float)) or isinstance(parent, bool):
                parent = None
        if not cond.holds(value, parent):
            target = f" ({field.depends_on} = {parent!r})" if cond.relative else ""
            return f"{value!r} breaks its condition '{cond.text}'{target}"
    return None
