"""Choosing extractors by name or import path, and loading a user's own extractor
(through the orchestrator's one plugin loader, :mod:`automl.plugins`)."""

from __future__ import annotations

import textwrap

import pytest

from automl.errors import ConfigError
from automl.observe.extractors import available_extractors, get_extractor
from metric_extractors import EpochMetrics, MetricExtractor, RegexExtractor, TaoStatusExtractor, register_extractor

USER_MODULE = '''
import json
from metric_extractors import EpochMetrics, MetricExtractor


class CsvExtractor(MetricExtractor):
    """metrics.csv lines 'epoch,map50' on stdout, written by some other trainer."""

    name = "csv"
    source = "stdout"

    def __init__(self, column="map50"):
        self.column = column
        self._rest = b""

    def feed(self, data):
        self._rest += data
        *lines, self._rest = self._rest.split(b"\\n")
        out = []
        for line in lines:
            parts = line.decode().split(",")
            if len(parts) == 2 and parts[0].isdigit():
                out.append(EpochMetrics(int(parts[0]), {self.column: float(parts[1])}))
        return out


class NotAnExtractor:
    name = "duck"
    source = "stdout"

    def feed(self, data):
        return []


class NoFeed(MetricExtractor):
    name = "nofeed"
    source = "stdout"


class WrongSource(MetricExtractor):
    name = "wrong"
    source = "tensorboard"

    def feed(self, data):
        return []
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    pkg = tmp_path / "my_extractors"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "csvx.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_extractors.csvx"


def test_builtin_names():
    assert available_extractors() == ["regex", "tao_status"]
    assert isinstance(get_extractor("tao_status"), TaoStatusExtractor)
    regex = get_extractor("regex", patterns={"ap": r"AP=(?P<value>\S+)"})
    assert isinstance(regex, RegexExtractor) and regex.metric_names == ["ap"]
    assert isinstance(regex, MetricExtractor)


@pytest.mark.parametrize("sep", [":", "."])
def test_user_extractor_by_dotted_path(user_package, sep):
    ex = get_extractor(f"{user_package}{sep}CsvExtractor", column="val_mAP50")
    assert ex.feed(b"epoch,map50\n0,0.1\n1,0.") == [EpochMetrics(0, {"val_mAP50": 0.1})]
    assert ex.feed(b"25\n") == [EpochMetrics(1, {"val_mAP50": 0.25})]


def test_user_extractor_through_the_monitor(user_package, tmp_path):
    from automl.observe.monitor import TrialMonitor

    log = tmp_path / "log.txt"
    log.write_bytes(b"0,0.5\n")
    monitor = TrialMonitor(tmp_path, log, get_extractor(f"{user_package}:CsvExtractor"))
    assert monitor.poll() == [EpochMetrics(0, {"map50": 0.5})]
    assert monitor.finish() == []  # no flush() of its own: the base class's says nothing is left


def test_a_registered_name_is_found(user_package):
    register_extractor("csv", f"{user_package}:CsvExtractor")
    try:
        assert "csv" in available_extractors()
        assert get_extractor("csv", column="ap").column == "ap"
    finally:
        from metric_extractors.registry import EXTRACTORS

        EXTRACTORS.pop("csv")


@pytest.mark.parametrize(
    "target, options, message",
    [
        ("tao_stats", {}, "did you mean 'tao_status'?"),
        ("nowhere.module:Thing", {}, "cannot import module 'nowhere.module'"),
        ("my_extractors.csvx:Missing", {}, "has no attribute 'Missing'"),
        ("my_extractors.csvx:NoFeed", {}, "no method 'feed"),
        ("my_extractors.csvx:WrongSource", {}, "'source' must be one of"),
        ("my_extractors.csvx:CsvExtractor", {"colum": "x"}, "no option 'colum'; it accepts column"),
        ("my_extractors.csvx:NotAnExtractor", {}, "subclass MetricExtractor"),
        ("tao_status", {"sections": 3}, "sections"),
        ("regex", {"patterns": "("}, "not a valid regular expression"),
        ("", {}, "expected a metric extractor name"),
    ],
)
def test_clear_errors(user_package, target, options, message):
    with pytest.raises(ConfigError) as info:
        get_extractor(target, **options)
    assert message in str(info.value)
