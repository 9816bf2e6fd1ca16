"""Pluggable metric extractors: job log bytes in, ``(epoch, {metric: value})`` out.

Built in: ``tao_status`` (TAO's ``status.json``) and ``regex`` (patterns over stdout),
listed by name in :mod:`metric_extractors.registry`. Your own: subclass
:class:`MetricExtractor` (or :class:`LineExtractor`) and name it in the run config as
``metric.extractor: package.module:ClassName``. This package imports nothing of the
orchestrator; bad options raise :class:`ExtractorOptionError`, a ``ValueError``.
"""

from metric_extractors._regex import DEFAULT_PATTERNS, RegexExtractor
from metric_extractors._tao_status import TaoStatusExtractor
from metric_extractors.base import SOURCES, EpochMetrics, ExtractorOptionError, LineExtractor, MetricExtractor
from metric_extractors.registry import available_extractors, register_extractor

__all__ = [
    "DEFAULT_PATTERNS",
    "SOURCES",
    "EpochMetrics",
    "ExtractorOptionError",
    "LineExtractor",
    "MetricExtractor",
    "RegexExtractor",
    "TaoStatusExtractor",
    "available_extractors",
    "register_extractor",
]
