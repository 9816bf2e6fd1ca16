"""DINO AutoML: an Optuna study whose trials are DINO training jobs."""

__version__ = "0.1.0"
