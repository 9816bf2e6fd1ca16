"""Metric extractors as plugins: ``metric.extractor`` is a name registered in
:mod:`metric_extractors.registry` (``tao_status``, ``regex``) or ``package.module:Class``.

Options (``metric.extractor_options``) are checked against the extractor's constructor
when the config is read; the class must subclass
:class:`metric_extractors.MetricExtractor` so that its optional hooks exist. Extractors
are stateful, so each trial builds its own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from automl.errors import ConfigError
from automl.plugins import PluginFamily
from metric_extractors import SOURCES, MetricExtractor
from metric_extractors.registry import EXTRACTORS as _NAMES

EXTRACTORS: PluginFamily[MetricExtractor] = PluginFamily(
    "metric extractor", _NAMES, where="metric.extractor", options_where="metric.extractor_options"
)


def available_extractors() -> list[str]:
    return EXTRACTORS.available()


def get_extractor(name: str, options: BaseModel | None = None, **raw_options: Any) -> MetricExtractor:
    """A new extractor ``name`` with validated ``options`` (or ``raw_options``, checked here)."""
    extractor = EXTRACTORS.build(name, options if options is not None else raw_options)
    check_extractor(extractor, name)
    return extractor


def check_extractor(extractor: Any, label: str) -> None:
    """Raise ConfigError unless ``extractor`` is a usable MetricExtractor."""
    problems = []
    if not isinstance(extractor, MetricExtractor):
        problems.append(
            f"it is a {type(extractor).__name__}, not a metric_extractors.MetricExtractor; subclass "
            "MetricExtractor (or LineExtractor for line-oriented logs)"
        )
    else:
        if type(extractor).feed is MetricExtractor.feed:
            problems.append("no method 'feed(data: bytes) -> list[EpochMetrics]'")
        if not isinstance(extractor.name, str):
            problems.append("no string attribute 'name'")
        if extractor.source not in SOURCES:
            problems.append(f"attribute 'source' must be one of {SOURCES}, got {extractor.source!r}")
    if problems:
        raise ConfigError(f"metric extractor {label!r} is not usable: " + "; ".join(problems))


def check_metric_name(extractor: MetricExtractor, metric: str, label: str) -> None:
    """ConfigError unless ``extractor`` can produce ``metric``, when it knows its metrics
    in advance (:attr:`MetricExtractor.metric_names`; a regex does, ``tao_status`` not)."""
    names = extractor.metric_names
    if names is not None and metric not in names:
        raise ConfigError(
            f"metric.name {metric!r}: extractor {label!r} can only produce {', '.join(names) or 'no metric'}; "
            "set metric.name to one of them, or add a pattern for it to metric.extractor_options.patterns"
        )
