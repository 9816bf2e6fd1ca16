"""A TAO-format train schema: every field of the spec with its type, default and limits.

The schema is JSON Schema as TAO writes it (see ``../shared/DESIGN.md``): nested
``properties``, per-field ``type``/``default``/``minimum``/``maximum``/``enum``/
``option_weights``/``math_cond``/``depends_on``, and ``automl_default_parameters`` /
``automl_disabled_parameters`` lists of dotted paths, at the top and inside collections.
Nothing here is DINO-specific, so any TAO network's schema loads the same way.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from automl.errors import ConfigError, SchemaError
from automl.search_space.dotted import did_you_mean, format_path, get_path, parse_path
from automl.search_space.math_cond import MathCond, MathCondError, parse_math_cond
from automl.search_space.tao_json import load_tao_json, parse_tao_json

# TAO's type names and their JSON Schema spellings, normalised to ours
TYPE_NAMES = {
    "float": "float", "number": "float",
    "int": "int", "integer": "int",
    "bool": "bool", "boolean": "bool",
    "string": "string", "str": "string",
    "categorical": "categorical", "enum": "categorical",
    "list": "list", "array": "list",
    "collection": "collection", "object": "collection", "dict": "collection",
}  # fmt: skip
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
    ) -> None:
        self.root = root
        self.default_parameters = default_parameters
        self.disabled_parameters = disabled_parameters
        self.network = network
        self.source = source
        self.fields: dict[str, SchemaField] = {}
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
        lists: dict[str, list[str]] = {"automl_default_parameters": [], "automl_disabled_parameters": []}
        root = _parse_node("", data, data.get("default"), source, lists, is_root=True)
        tao = data.get("x_tao_schema") if isinstance(data.get("x_tao_schema"), dict) else {}
        schema = cls(
            root,
            default_parameters=tuple(dict.fromkeys(lists["automl_default_parameters"])),
            disabled_parameters=frozenset(lists["automl_disabled_parameters"]),
            network=tao.get("network_arch") or tao.get("model"),
            source=source,
        )
        schema._check_references()
        return schema

    def _index(self, node: SchemaField) -> None:
        for child in node.children.values():
            self.fields[child.path] = child
            self._index(child)

    def _check_references(self) -> None:
        for path in self.default_parameters:
            if path not in self.fields:
                raise SchemaError(
                    f"{self.source}: automl_default_parameters lists {path!r}, which is not a "
                    f"field of the schema{did_you_mean(path, self.fields)}"
                )
        # automl_disabled_parameters is shared by all of a network's actions in TAO's
        # files, so it may name fields of other actions (evaluate, export): not an error.
        for field in self.fields.values():
            if field.depends_on is not None and field.depends_on not in self.fields:
                raise SchemaError(
                    f"{self.source}: field {field.path!r} depends_on {field.depends_on!r}, which "
                    f"is not a field of the schema{did_you_mean(field.depends_on, self.fields)}"
                )
        graph = {p: [f.depends_on] for p, f in self.fields.items() if f.depends_on}
        cycle = find_cycle(graph)
        if cycle:
            raise SchemaError(
                f"{self.source}: depends_on cycle {' -> '.join(cycle)}: a parameter cannot "
                "depend on itself; remove one of these depends_on entries"
            )

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
def _parse_node(
    path: str,
    node: Mapping[str, Any],
    inherited_default: Any,
    source: str,
    lists: dict[str, list[str]],
    is_root: bool = False,
) -> SchemaField:
    where = f"{source}: field {path!r}" if path else source
    for key in lists:
        value = node.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"{where}: {key} must be a list of dotted paths")
        lists[key].extend(value)

    props = node.get("properties")
    if props is not None and not isinstance(props, dict):
        raise SchemaError(f"{where}: 'properties' must be an object")
    default = node.get("default", inherited_default)
    raw_type = node.get("type")
    if raw_type is None:
        type_ = "collection" if props is not None or is_root else _infer_type(default)
    elif raw_type in TYPE_NAMES:
        type_ = TYPE_NAMES[raw_type]
    else:
        raise SchemaError(
            f"{where}: unknown type {raw_type!r}{did_you_mean(str(raw_type), TYPE_NAMES)}; "
            f"expected one of {sorted(set(TYPE_NAMES.values()))}"
        )

    children: dict[str, SchemaField] = {}
    for name, child in (props or {}).items():
        if not isinstance(child, dict):
            if name.startswith("automl_"):  # TAO's files keep a stray list here; not a field
                if name in lists and isinstance(child, list):
                    lists[name].extend(c for c in child if isinstance(c, str))
                continue
            raise SchemaError(f"{where}: property {name!r} must be an object, got {type(child).__name__}")
        child_default = default.get(name) if isinstance(default, dict) else None
        children[name] = _parse_node(
            f"{path}.{name}" if path else name, child, child_default, source, lists
        )

    minimum = _bound(node, "minimum", where)
    maximum = _bound(node, "maximum", where)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise SchemaError(
            f"{where}: minimum {minimum:g} is greater than maximum {maximum:g}; swap or fix them"
        )
    if minimum == math.inf or maximum == -math.inf:
        raise SchemaError(f"{where}: minimum cannot be Infinity (nor maximum -Infinity)")

    enum = node.get("enum", node.get("valid_options"))
    if enum is not None:
        if not isinstance(enum, list) or not enum:
            raise SchemaError(f"{where}: enum must be a non-empty list")
        enum = tuple(enum)
    weights = _option_weights(node.get("option_weights"), enum, where)

    math_cond = None
    if node.get("math_cond") is not None:
        try:
            math_cond = parse_math_cond(node["math_cond"])
        except MathCondError as exc:
            raise SchemaError(f"{where}: {exc}") from None
    depends_on = node.get("depends_on")
    if depends_on is not None and not isinstance(depends_on, str):
        raise SchemaError(f"{where}: depends_on must be a dotted path string")
    if math_cond is not None and math_cond.relative and not depends_on:
        raise SchemaError(f"{where}: math_cond {math_cond.text!r} needs a depends_on field")

    item = None
    if type_ == "list" and isinstance(default, list) and default and isinstance(default[0], dict):
        keys = {k: v for d in default if isinstance(d, dict) for k, v in d.items()}
        item = SchemaField(
            path=f"{path}[]",
            type="collection",
            default=default[0],
            children={k: SchemaField(f"{path}[].{k}", _infer_type(v), v) for k, v in keys.items()},
        )

    return SchemaField(
        path=path,
        type=type_,
        default=default,
        minimum=minimum,
        maximum=maximum,
        enum=enum,
        option_weights=weights,
        math_cond=math_cond,
        depends_on=depends_on,
        parent_param=str(node.get("parent_param", "")).upper() == "TRUE",
        automl_enabled=node.get("automl_enabled"),
        popular=node.get("popular") is True,
        children=children,
        open=type_ == "collection" and not children,
        item=item,
    )


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


def _bound(node: Mapping[str, Any], key: str, where: str) -> float | None:
    value = node.get(key, node.get({"minimum": "valid_min", "maximum": "valid_max"}[key]))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where}: {key} must be a number or Infinity, got {value!r}")
    return value


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
    if field.type == "list":
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
        elif field.item is not None:
            for i, sub in enumerate(value):
                _check_value(field.item, sub, tokens + (i,), spec, problems)
        return
    problem = leaf_problem(field, value, spec)
    if problem:
        problems.append(f"{where}: {problem}")


def leaf_problem(field: SchemaField, value: Any, spec: Mapping | None = None) -> str | None:
    """Why ``value`` is not valid for a scalar field, or None. ``spec`` gives depends_on values."""
    kind = field.type
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
    if not field.is_numeric or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if field.minimum is not None and value < field.minimum:
        return f"{value!r} is below the minimum {field.minimum:g}"
    if field.maximum is not None and value > field.maximum:
        return f"{value!r} is above the maximum {field.maximum:g}"
    cond = field.math_cond
    if cond is not None:
        parent = None
        if cond.relative and spec is not None:
            parent = get_path(spec, parse_path(field.depends_on), None)
            if not isinstance(parent, (int, float)) or isinstance(parent, bool):
                parent = None
        if not cond.holds(value, parent):
            target = f" ({field.depends_on} = {parent!r})" if cond.relative else ""
            return f"{value!r} breaks its condition '{cond.text}'{target}"
    return None
