"""The one plugin loader: a registered name or ``module:attr``; options checked by the
plugin (its settings model, its ``Options`` model, or its signature)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from automl.errors import ConfigError
from automl.plugins import PluginFamily, PluginOptions, PluginSettings

MODULE = '''
from automl.plugins import PluginOptions, PluginSettings


class Typed:
    def __init__(self, size: int = 1, label: str = "x", *, client=None):
        self.size, self.label, self.client = size, label, client


class Declared:
    class Options(PluginOptions):
        size: int = 2

    def __init__(self, size, **ignored):
        self.size = size


class Open:
    def __init__(self, **anything):
        self.anything = anything


class Picky:
    def __init__(self, size: int = 1):
        if size > 10:
            raise ValueError("size must be at most 10")
        self.size = size


class Made(PluginSettings):
    size: int = 3

    def build(self, **context):
        return ("made", self.size, context)
'''


@pytest.fixture
def family(tmp_path, monkeypatch) -> PluginFamily[Any]:
    (tmp_path / "my_plugins.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return PluginFamily("widget", {"typed": "my_plugins:Typed", "made": "my_plugins:Made"},
                        where="widget.name", options_where="widget", supplied=("client",))


def test_names_and_import_paths(family):
    assert family.available() == ["made", "typed"]
    assert family.build("typed").size == 1
    assert family.build("my_plugins:Typed", {"size": 4}).size == 4
    assert family.build("my_plugins.Typed").label == "x"  # a dotted path works too
    family.register("open", "my_plugins:Open")
    assert family.build("open", {"a": 1}).anything == {"a": 1}  # **kwargs takes any option


def test_signature_options_are_typed_and_supplied_ones_are_not_options(family):
    with pytest.raises(ConfigError, match=r"widget.size: Input should be a valid integer"):
        family.validate("typed", {"size": "big"})
    with pytest.raises(ConfigError, match=r"widget.client: widget 'typed' has no option 'client'; it accepts size, label"):
        family.validate("typed", {"client": 1})
    assert family.build("typed", {"size": 2}, client="c").client == "c"  # the orchestrator's to give


def test_declared_options_and_settings_models(family):
    assert family.build("my_plugins:Declared").size == 2
    with pytest.raises(ConfigError, match="has no option 'sise'; it accepts size"):
        family.validate("my_plugins:Declared", {"sise": 1})
    assert family.build("made", {"size": 5}, run="r") == ("made", 5, {"run": "r"})
    assert isinstance(family.validate("made", {}), PluginSettings)


def test_errors_say_what_and_where(family):
    with pytest.raises(ConfigError, match=r"widget.name: widget 'tyed' is neither a known name .* did you mean 'typed'\?"):
        family.resolve("tyed")
    with pytest.raises(ConfigError, match=r"cannot import module 'nowhere'"):
        family.resolve("nowhere:Thing")
    with pytest.raises(ConfigError, match=r"module 'my_plugins' has no attribute 'Missing'"):
        family.resolve("my_plugins:Missing")
    with pytest.raises(ConfigError, match=r"widget 'my_plugins:Picky' rejected its options: size must be at most 10"):
        family.build("my_plugins:Picky", {"size": 11})
    with pytest.raises(ConfigError, match=r"widget: widget options must be a mapping"):
        family.validate("typed", [1, 2])  # type: ignore[arg-type]


def test_bases_refuse_unknown_keys():
    class Options(PluginOptions):
        a: int = 1

    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Options(b=2)  # type: ignore[call-arg]
