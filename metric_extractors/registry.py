"""The extractors known by name. The orchestrator loads them (and user extractors named
``package.module:ClassName``) through its one plugin loader; this package only says
which names exist, so it depends on nothing of the orchestrator."""

from __future__ import annotations

# name -> "module:attribute"; imported only when a run uses it
EXTRACTORS: dict[str, str] = {
    "tao_status": "metric_extractors._tao_status:TaoStatusExtractor",
    "regex": "metric_extractors._regex:RegexExtractor",
}


def register_extractor(name: str, target: str) -> None:
    """Make ``target`` (``module:attr``, a :class:`~metric_extractors.MetricExtractor`
    subclass) available as ``metric.extractor: <name>``."""
    EXTRACTORS[name] = target


def available_extractors() -> list[str]:
    return sorted(EXTRACTORS)
