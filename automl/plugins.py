"""One way to choose a plugin: a registered name or ``module:attr``, options checked by it.

Samplers, pruners, launchers and metric extractors are all chosen this way from the run
config, each family with its own registry of names (:class:`PluginFamily`). A target
is one of:

- a :class:`PluginSettings` subclass: a pydantic model of the plugin's options whose
  :meth:`~PluginSettings.build` makes the object (our samplers and pruners, one model
  per algorithm, so each validates its own settings);
- any other class or factory (a launcher, an extractor, a user's Optuna sampler): its
  options are checked against its ``Options`` attribute when it declares a pydantic
  model there, else against its signature (types from its annotations), leaving out
  the parameters the family's orchestrator supplies itself (``supplied``).

Either way an option the plugin does not take is an error naming that key and listing
the ones it takes, raised when the config is read, before any data are staged.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from typing import Any, Callable, Collection, Generic, Literal, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from automl.errors import ConfigError

T = TypeVar("T")


class PluginSettings(BaseModel):
    """Base of a plugin that is its own options model (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, **context: Any) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class PluginOptions(BaseModel):
    """Base of an ``Options`` model a plugin class may declare."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def import_target(target: str) -> Any:
    """``package.module:attr`` (or ``package.module.attr``) -> the object; ValueError says why."""
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ValueError("not an import path (a user plugin is named 'package.module:ClassName')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc}); install the package or put it on PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{attr!r} is not a class or factory")
    return obj


def _signature_model(factory: Callable[..., Any], supplied: Collection[str] = ()) -> type[BaseModel]:
    """A pydantic model of ``factory``'s named parameters except the ``supplied`` ones."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: anything goes
        return create_model(f"{getattr(factory, '__name__', 'Plugin')}Options",
                            __config__=ConfigDict(extra="allow", arbitrary_types_allowed=True))
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations that do not resolve here: validate names only
        hints = {}
    fields: dict[str, Any] = {}
    extra: Literal["forbid", "allow"] = "forbid"
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra = "allow"
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) or param.name in supplied:
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    name = f"{getattr(factory, '__name__', 'Plugin')}Options"
    config = ConfigDict(extra=extra, arbitrary_types_allowed=True)
    return create_model(name, __config__=config, **fields)


def options_model(target: Any, supplied: Collection[str] = ()) -> type[BaseModel]:
    """The model that validates ``target``'s options (see the module docstring)."""
    if inspect.isclass(target) and issubclass(target, PluginSettings):
        return target
    declared = getattr(target, "Options", None)
    if inspect.isclass(declared) and issubclass(declared, BaseModel):
        return declared
    return _signature_model(target, supplied)


def _accepted(model: type[BaseModel]) -> str:
    names = list(model.model_fields)
    return ", ".join(names) if names else "no options"


def describe_validation_error(exc: ValidationError, where: str, what: str, model: type[BaseModel]) -> str:
    """One line per problem, each naming the key as the config spells it."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        loc = f"{where}.{key}" if key else where
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: {what} has no option {key.split('.')[0]!r}; it accepts {_accepted(model)}")
        elif err["type"] == "missing":
            lines.append(f"{loc}: {what} needs this option")
        else:
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


class PluginFamily(Generic[T]):
    """The plugins of one kind (``"pruner"``), by registered name or import path.

    ``builtins`` maps a name to ``module:attr``; targets are imported only when used, so
    listing names costs nothing and ``docker`` is not imported for a local run. It is
    kept by reference: a name registered there later is found too.
    """

    def __init__(self, kind: str, builtins: dict[str, str], where: str, options_where: str,
                 supplied: Collection[str] = ()) -> None:
        self.kind = kind  # "pruner", "metric extractor"
        self.where = where  # the config key naming the plugin: "pruner.name"
        self.options_where = options_where  # where its options are: "pruner", "launcher.options"
        self.supplied = tuple(supplied)  # constructor parameters the orchestrator passes itself
        self._targets = builtins

    def available(self) -> list[str]:
        return sorted(self._targets)

    def register(self, name: str, target: str) -> None:
        """Make ``target`` (``module:attr``) available under ``name``."""
        self._targets[name] = target

    def resolve(self, name: str, where: str | None = None) -> Any:
        """The class or factory ``name`` stands for; ConfigError says what is wrong
        (``where``: the config key naming it, default the family's)."""
        where = where or self.where
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: expected a {self.kind} name ({', '.join(self.available())}) "
                              f"or an import path, got {name!r}")
        target = self._targets.get(name, name)
        try:
            return import_target(target)
        except ValueError as exc:
            if name in self._targets:
                raise ConfigError(f"{where}: {self.kind} {name!r} is not available here: {exc}") from None
            close = difflib.get_close_matches(name, self.available(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close and ":" not in name else ""
            raise ConfigError(
                f"{where}: {self.kind} {name!r} is neither a known name ({', '.join(self.available())}) "
                f"nor a loadable import path: {exc}{hint}"
            ) from None

    def options_model(self, name: str, where: str | None = None) -> type[BaseModel]:
        return options_model(self.resolve(name, where), self.supplied)

    def validate(self, name: str, options: Mapping[str, Any], where: str | None = None,
                 name_where: str | None = None) -> BaseModel:
        """``options`` checked by plugin ``name``; ``where`` is their place in the config,
        ``name_where`` the name's (both default to the family's keys)."""
        model = self.options_model(name, name_where)
        where = where or self.options_where
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: {self.kind} options must be a mapping, got {options!r}")
        try:
            return model.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, where, f"{self.kind} {name!r}", model)) from None

    def build(self, name: str, options: BaseModel | Mapping[str, Any] | None = None, **context: Any) -> T:
        """A new plugin object from validated (or raw) ``options``; ``context`` fills the
        parameters the orchestrator supplies. A constructor's ValueError or TypeError
        becomes a ConfigError naming the plugin."""
        target = self.resolve(name)
        if not isinstance(options, BaseModel):
            options = self.validate(name, options or {})
        try:
            if isinstance(options, PluginSettings):
                return typing.cast(T, options.build(**context))
            values = {field: getattr(options, field) for field in type(options).model_fields}
            values.update(options.model_extra or {})
            return typing.cast(T, target(**values, **context))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where}: {self.kind} {name!r} rejected its options: {exc}") from None
