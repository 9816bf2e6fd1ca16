"""Start-up caches that outlive a trial: compiled kernels, shared by a workspace's jobs.

The fused attention's Triton kernels (and ``torch.compile``'s, with ``train.compile``)
take seconds to compile per process; Triton keeps them in ``~/.triton/cache``, which a
container (``HOME=/tmp``) loses with the container. Every job of a workspace gets the
same cache folders instead, ``<workspace>/cache/triton`` and ``<workspace>/cache/
torchinductor``, and the Docker launcher mounts them read-write at the same path
(``JobSpec.cache_dirs``). Both compilers write their cache files atomically, so
concurrent trials can share a folder. A value the user set (``launcher.options.
extra_env``, or the environment of a local run) wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from automl.config.run_config import RunConfig

KERNEL_CACHES = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "torchinductor"}


def kernel_cache_env(cfg: RunConfig) -> dict[str, str]:
    """The cache variables for one job, their folders created."""
    user_env = dict(getattr(cfg.launcher.options, "extra_env", None) or {})
    if cfg.launcher.name == "local":
        user_env = {**os.environ, **user_env}
    root = Path(os.path.abspath(cfg.workspace)) / "cache"
    env = {}
    for variable, folder in KERNEL_CACHES.items():
        if variable in user_env:
            continue
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        env[variable] = str(path)
    return env
