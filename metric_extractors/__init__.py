"""Pluggable metric extractors: job log bytes in, ``(epoch, {metric: value})`` out.

Built in: ``tao_status`` (TAO's ``status.json``) and ``regex`` (patterns over stdout).
Pick one by name or by import path with :func:`get_extractor`.
"""

from metric_extractors._regex import DEFAULT_PATTERNS, RegexExtractor
from metric_extractors._tao_status import TaoStatusExtractor
from metric_extractors.base import EpochMetrics, LineExtractor, MetricExtractor
from metric_extractors.registry import (
    available_extractors,
    check_extractor,
    get_extractor,
    register_extractor,
)

__all__ = [
    "DEFAULT_PATTERNS",
    "EpochMetrics",
    "LineExtractor",
    "MetricExtractor",
    "RegexExtractor",
    "TaoStatusExtractor",
    "available_extractors",
    "check_extractor",
    "get_extractor",
    "register_extractor",
]
