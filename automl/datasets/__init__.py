"""Datasets: where a split comes from, staging it locally, and preflight checks.

    src = parse_source("s3://bucket/train")            # DatasetError on a bad URI/path
    staged = stage(src, cache_dir)                      # StagedSplit(image_dir, json_file)
    both = stage_sources(train_src, val_src_or_None, cache_dir)
    findings = preflight(both.train, both.val, SpecFacts(...))  # val == train -> a warning
"""

from automl.datasets.findings import Finding, Severity, has_errors
from automl.datasets.preflight import SpecFacts, check_spec, load_spec_facts, preflight
from automl.datasets.s3 import make_client as make_s3_client
from automl.datasets.safe_extract import UnsafeArchiveError, safe_extract
from automl.datasets.sources import DataSource, LocalArchive, LocalFolder, S3Archive, S3Prefix, parse_source
from automl.datasets.staging import StagedSources, StagedSplit, default_cache_dir, stage, stage_sources

__all__ = [
    "DataSource",
    "Finding",
    "LocalArchive",
    "LocalFolder",
    "S3Archive",
    "S3Prefix",
    "Severity",
    "SpecFacts",
    "StagedSources",
    "StagedSplit",
    "UnsafeArchiveError",
    "check_spec",
    "default_cache_dir",
    "has_errors",
    "load_spec_facts",
    "make_s3_client",
    "parse_source",
    "preflight",
    "safe_extract",
    "stage",
    "stage_sources",
]
