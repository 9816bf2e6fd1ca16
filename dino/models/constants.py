"""The per-shape constant tensors the model caches (level tables and layouts, token
grids, sine frequencies), registered so that CUDA graphs can keep them alive.

A CUDA graph replays the addresses of the tensors it captured. The caches are bounded
(cleared past 64 input shapes, which multi-scale training reaches within a couple of
epochs), and a cleared tensor's memory is handed to other tensors: a validation graph
captured in epoch 0 then read freed memory. On an H200 every packed smoke trial failed
so in its third epoch (a device-side assert). ``snapshot`` returns every cached value;
``dino.models.cuda_graphs`` holds it with each graph it captures, so whatever a graph
read outlives any clearing.
"""

from __future__ import annotations

from typing import Any

_CACHES: list[dict] = []


def register(cache: dict) -> dict:
    """Declare a module-level cache of constant tensors; returns it."""
    _CACHES.append(cache)
    return cache


def snapshot() -> list[Any]:
    """The values of every registered cache now (references, not copies)."""
    return [value for cache in _CACHES for value in cache.values()]


def registered() -> list[dict]:
    return list(_CACHES)
