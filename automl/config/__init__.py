"""Run configuration: typed models and the loader that builds them from YAML."""

from automl.config.loader import available_profiles, build_run_config, read_config_file, read_profile
from automl.config.run_config import RunConfig

__all__ = ["RunConfig", "available_profiles", "build_run_config", "read_config_file", "read_profile"]
