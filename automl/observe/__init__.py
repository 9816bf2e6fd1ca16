"""Watching a running trial: the log tail, the metric extractors, failure diagnosis.

``monitor`` tails a job's new bytes and feeds them to an extractor chosen through
``extractors`` (the plugins of :mod:`metric_extractors`, by name or import path);
``diagnosis`` names the cause of a failed job from what it left behind.
"""
