"""Load a spec YAML plus Hydra-style ``key.sub=value`` overrides into a :class:`Spec`.

This is the only place raw dicts exist: unknown keys are rejected with a did-you-mean,
values are checked against the dataclass field types, and fields the trainer accepts
but does not act on are returned as a list so the caller reports them once.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any

import yaml

from dino.config.rules import Lookup, check_rules
from dino.config.spec import BEST_METRICS, IGNORED_FIELDS, IGNORED_SECTIONS, Spec
from dino.config.yaml_values import load_yaml


class SpecError(ValueError):
    """The spec file or an override is wrong; the message says where and how to fix it."""


def load_spec(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Spec, list[str]]:
    """Parse ``path`` (may be None: defaults only) and apply ``overrides`` in order.

    Returns the spec and the fields present in the input that the trainer ignores,
    each as ``"dotted.path: reason"``.
    """
    raw = read_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "<defaults>"
    for item in overrides:
        _apply_override(raw, item)
    spec = _build(Spec, raw, "", where)
    _validate(spec, where)
    return spec, _ignored_fields(raw)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The spec file as a dict; a clear SpecError for missing, unreadable or non-mapping files."""
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path} must be a YAML mapping (key: value), got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.gpu_ids=[0,1]"`` -> (["train", "gpu_ids"], [0, 1]); the value is YAML."""
    key, sep, text = item.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"override {item!r} is not of the form key.sub=value")
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"override {item!r}: the value is not valid YAML ({exc})") from None
    return key.split("."), value


def known_paths() -> list[str]:
    """Every dotted field path of :class:`Spec` (sections and leaves)."""
    out: list[str] = list(IGNORED_SECTIONS)

    def walk(cls: type, prefix: str) -> None:
        for name, tp in typing.get_type_hints(cls).items():
            out.append(prefix + name)
            if dataclasses.is_dataclass(tp):
                walk(tp, prefix + name + ".")

    walk(Spec, "")
    return out


def _apply_override(raw: dict[str, Any], item: str) -> None:
    parts, value = parse_override(item)
    dotted = ".".join(parts)
    if parts[0] not in IGNORED_SECTIONS and dotted not in known_paths():
        raise SpecError(f"override {item!r}: unknown key {dotted!r}{_suggest(dotted, known_paths())}")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _suggest(dotted: str, candidates: list[str]) -> str:
    """'; did you mean ...?': the same leaf name elsewhere, else the closest path or leaf."""
    leaf = dotted.rsplit(".", 1)[-1]
    ancestors = {".".join(dotted.split(".")[:i]) for i in range(1, dotted.count(".") + 1)}
    candidates = [c for c in candidates if c not in ancestors]
    close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    if not close:
        close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.75)
    if not close:
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
        close = [leaves[near[0]]] if near else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: {prefix.rstrip('.') or 'the spec'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if not prefix and key in IGNORED_SECTIONS:
            continue
        if key not in hints:
            raise SpecError(f"{where}: unknown key {dotted!r}{_suggest(dotted, known_paths())}")
        kwargs[key] = _coerce(hints[key], value, dotted, where)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, dotted: str, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, dotted + ".", where)
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if value is None:
            return []
        if isinstance(value, dict) and dataclasses.is_dataclass(item_tp):
            value = [value]  # TAO writes e.g. test_data_sources as one mapping
        if not isinstance(value, list):
            raise SpecError(f"{where}: {dotted} must be a list, got {value!r}")
        return [_coerce(item_tp, v, f"{dotted}[{i}]", where) for i, v in enumerate(value)]
    if typing.get_origin(tp) is dict:  # e.g. inference.color_map: {name: colour}
        key_tp, value_tp = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise SpecError(f"{where}: {dotted} must be a mapping (key: value), got {value!r}")
        return {_coerce(key_tp, k, dotted, where): _coerce(value_tp, v, f"{dotted}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(f"{where}: {dotted} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SpecError(f"{where}: {dotted} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise SpecError(f"{where}: {dotted} must be a number, got {value!r}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise SpecError(f"{where}: {dotted} must be a string, got {value!r}")
    raise TypeError(f"unsupported spec field type {tp!r} at {dotted}")  # a bug in spec.py


def _ignored_fields(raw: dict[str, Any]) -> list[str]:
    out = [f"{name}: section not used by this trainer" for name in IGNORED_SECTIONS if name in raw]
    for dotted, reason in IGNORED_FIELDS.items():
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            out.append(f"{dotted}: {reason}")
    return out


_MISSING = object()


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise SpecError(f"{where}: {message}")


def _validate(spec: Spec, where: str) -> None:
    """Value checks that would otherwise fail deep inside training; the cross-field ones
    are the shared rules (errors refuse the spec)."""
    t, o, d, a = spec.train, spec.train.optim, spec.dataset, spec.dataset.augmentation
    t.precision = t.precision.lower()
    _check(t.precision in ("fp32", "bf16", "fp16"), where, f"train.precision must be fp32, bf16 or fp16, got {t.precision!r}")
    canon = {"adamw": "AdamW", "sgd": "SGD"}
    _check(o.optimizer.lower() in canon, where, f"train.optim.optimizer must be AdamW or SGD, got {o.optimizer!r}")
    o.optimizer = canon[o.optimizer.lower()]
    canon = {"multistep": "MultiStep", "steplr": "StepLR"}
    _check(o.lr_scheduler.lower() in canon, where, f"train.optim.lr_scheduler must be MultiStep or StepLR, got {o.lr_scheduler!r}")
    o.lr_scheduler = canon[o.lr_scheduler.lower()]
    _check(t.checkpoint_interval_unit == "epoch", where,
           f"train.checkpoint_interval_unit {t.checkpoint_interval_unit!r} is not supported; use 'epoch'")
    _check(t.best_checkpoint_metric in ("", *BEST_METRICS), where,
           f"train.best_checkpoint_metric {t.best_checkpoint_metric!r} is not a validation metric; use one of "
           f"{', '.join(BEST_METRICS)}, or '' to keep no best checkpoint")
    for name, value, low in [
        ("train.num_epochs", t.num_epochs, 1), ("train.checkpoint_interval", t.checkpoint_interval, 1),
        ("train.validation_interval", t.validation_interval, 1), ("train.num_gpus", t.num_gpus, 1),
        ("dataset.batch_size", d.batch_size, 1), ("dataset.workers", d.workers, 0),
        ("dataset.num_classes", d.num_classes, 1), ("train.optim.lr_step_size", o.lr_step_size, 1),
        ("dataset.augmentation.test_random_resize", a.test_random_resize, 1),
        ("dataset.augmentation.random_resize_max_size", a.random_resize_max_size, 1),
        ("dataset.augmentation.train_random_crop_min", a.train_random_crop_min, 1),
    ]:
        _check(value >= low, where, f"{name} must be >= {low}, got {value}")
    _check(o.lr > 0 and o.lr_backbone >= 0 and o.weight_decay >= 0 and o.lr_decay > 0 and o.lr_linear_proj_mult >= 0,
           where, "train.optim: lr must be > 0, lr_decay > 0, lr_backbone / weight_decay / lr_linear_proj_mult >= 0")
    _check(all(s > 0 for s in a.scales) and len(a.scales) > 0, where, "dataset.augmentation.scales must list sizes > 0")
    _check(all(s > 0 for s in a.train_random_resize) and len(a.train_random_resize) > 0, where,
           "dataset.augmentation.train_random_resize must list sizes > 0")
    _check(len(a.input_mean) == 3 and len(a.input_std) == 3 and all(s > 0 for s in a.input_std), where,
           "dataset.augmentation.input_mean / input_std must have 3 values (RGB), std > 0")
    _check(a.train_random_crop_min <= a.train_random_crop_max, where,
           f"dataset.augmentation.train_random_crop_min ({a.train_random_crop_min}) must be <= "
           f"train_random_crop_max ({a.train_random_crop_max})")
    _check(0.0 <= a.horizontal_flip_prob <= 1.0, where, "dataset.augmentation.horizontal_flip_prob must be in [0, 1]")
    for violation in check_rules(spec_lookup(spec)):
        _check(not violation.is_error, where, str(violation))


def spec_lookup(spec: Spec) -> Lookup:
    """Dotted path -> value of a parsed spec (None for a path it does not have), the view
    the cross-field rules of :mod:`dino.config.rules` read."""

    def lookup(dotted: str) -> Any:
        node: Any = spec
        for part in dotted.split("."):
            if not dataclasses.is_dataclass(node) or not hasattr(node, part):
                return None
            node = getattr(node, part)
        return node

    return lookup
