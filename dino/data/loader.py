"""Datasets and DataLoaders from the spec, with the checks that must pass before training.

Batches are ``(images Float[B, 3, H, W], masks Bool[B, H, W], targets)``: images padded
at the bottom/right to the largest in the batch, ``masks`` True on padding.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler

from dino.config.spec import AugmentationConfig, DatasetConfig, DataSource
from dino.data.coco import CocoDetection, DataError
from dino.data.transforms import train_transforms, val_transforms
from dino.runtime import deferred_stop, ignore_stop_signals, stop_signals_blocked
from dino.status_log import StatusLog

# a file to append every batch's targets to (JSON Lines), to see what the model is given
RECORD_TARGETS_ENV = "DINO_RECORD_TARGETS"


def fixed_canvas_sizes(aug: AugmentationConfig, train: bool) -> list[tuple[int, int]]:
    """``dataset.augmentation.fixed_padding``: the few (H, W) every batch is padded to.

    Every image leaves the transforms with its shorter side at most ``max(scales)``
    (validation: ``test_random_resize``) and its longer side at most
    ``random_resize_max_size``, so a landscape batch fits (short, long), a portrait one
    (long, short) and a mixed one (long, long): at most three input shapes, which is what
    a compiled model needs to avoid recompiling. Smallest area first."""
    short = max(aug.scales) if train else aug.test_random_resize
    long = max(aug.random_resize_max_size, short)
    sizes = [(short, long), (long, short), (long, long)]
    return sorted(set(sizes), key=lambda hw: (hw[0] * hw[1], hw))


# On GPUs every batch is padded up to a multiple of this many pixels. Multi-scale training
# otherwise gives almost every batch a shape of its own (the smoke profile: 51 distinct
# shapes in 60 batches), and each new shape pays again for what a GPU caches per shape
# (cuDNN's convolution plans, the CUDA graphs of validation); rounded up, the smoke's
# batches take a handful of shapes (bench/shape_churn.py measures the difference). The
# backbone's coarsest stride is 32, so no level gets a partial row from it.
GPU_PAD_MULTIPLE = 32


def pad_multiple(device: torch.device) -> int:
    """What ``collate`` rounds batch sizes up to on ``device`` (1: not rounded)."""
    return GPU_PAD_MULTIPLE if device.type == "cuda" else 1


def collate(batch: list[tuple[torch.Tensor, dict]], sizes: list[tuple[int, int]] | None = None,
            multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Pad to the largest image of the batch rounded up to ``multiple`` pixels, or to the
    first of ``sizes`` that holds it (fixed padding; a batch that fits none keeps its own
    size)."""
    images, targets = zip(*batch)
    h = -(-max(im.shape[1] for im in images) // multiple) * multiple
    w = -(-max(im.shape[2] for im in images) // multiple) * multiple
    if sizes:
        h, w = next(((fh, fw) for fh, fw in sizes if fh >= h and fw >= w), (h, w))
    padded = images[0].new_zeros((len(images), 3, h, w))
    masks = torch.ones((len(images), h, w), dtype=torch.bool)
    for i, im in enumerate(images):
        padded[i, :, : im.shape[1], : im.shape[2]].copy_(im)
        masks[i, : im.shape[1], : im.shape[2]] = False
    return padded, masks, list(targets)


def _collate_fn(cfg: DatasetConfig, train: bool, fixed_size: bool, multiple: int):
    fn = functools.partial(collate, sizes=fixed_canvas_sizes(cfg.augmentation, train) if fixed_size else None,
                           multiple=multiple)
    record = os.environ.get(RECORD_TARGETS_ENV)
    if record:
        return functools.partial(recording_collate, fn, record, "train" if train else "val")
    return fn


def recording_collate(fn: Callable, path: str, split: str, batch: list[tuple[torch.Tensor, dict]]):
    """``fn(batch)``, after appending each target to ``path`` as one JSON line: ``split``,
    ``image_id``, ``size`` / ``orig_size`` (h, w), ``labels`` and ``boxes`` as the model gets
    them (cxcywh relative to ``size``). One ``os.write`` per batch, so lines from several
    loader workers never interleave."""
    lines = []
    for _, t in batch:
        lines.append(json.dumps({
            "split": split, "image_id": int(t["image_id"]), "size": t["size"].tolist(),
            "orig_size": t["orig_size"].tolist(), "labels": t["labels"].tolist(), "boxes": t["boxes"].tolist(),
        }))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\n".join(lines) + "\n").encode())
    finally:
        os.close(fd)
    return fn(batch)


def _worker_init(_worker_id: int) -> None:
    """Workers leave termination to the main process, which stops them in order."""
    ignore_stop_signals()


class _Loader(DataLoader):
    """A DataLoader whose workers never take the trainer's stop signal.

    Workers are forked with SIGTERM / SIGINT blocked and ignore them from their first
    line of our code (``_worker_init``): a SIGTERM to the process group stops the trainer
    alone, which then shuts its workers down in order. And the trainer takes the signal
    between batches, not while it receives one from a worker (a batch cut off mid-way
    leaves the worker's file-descriptor server with a broken connection, which it
    reports with a traceback). So a stopped run's log ends with its one line.
    """

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with deferred_stop(), stop_signals_blocked():
            return _BatchesInOnePiece(super().__iter__())


class _BatchesInOnePiece:
    """Iterates a multi-process loader, holding the stop signal while a batch arrives.

    The hold lasts until the batch is in (milliseconds to a batch's loading time); a worker
    that hangs holds the trainer until the launcher's SIGKILL, as it holds training anyway.
    """

    def __init__(self, batches) -> None:
        self._batches = batches

    def __iter__(self) -> _BatchesInOnePiece:
        return self

    def __next__(self):
        with deferred_stop():
            return next(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def build_dataset(sources: list[DataSource], cfg: DatasetConfig, train: bool, where: str) -> CocoDetection:
    """A checked dataset: files exist and open, the data policy applied (``cfg.strict_data_policy``:
    any finding refuses), not empty, every category id < ``cfg.num_classes``."""
    tf = train_transforms(cfg.augmentation) if train else val_transforms(cfg.augmentation)
    ds = CocoDetection(sources, tf, where, strict=cfg.strict_data_policy)
    if len(ds) == 0:
        raise DataError(f"{where}: the annotation file(s) list no images; the dataset is empty")
    check_num_classes(ds, cfg.num_classes, where)
    return ds


def log_data_policy(ds: CocoDetection, say: Callable[..., None], status: StatusLog) -> None:
    """What the data policy fixed in ``ds``: a line per finding on stdout and one WARNING
    status line per source (``data_policy``: the counts by code), once per dataset."""
    for where, report in ds.policy:
        if not report.findings:
            continue
        head = f"Data policy, {where} ({report.source})"
        for f in report.findings:
            say(f"{head}: {f.summary()}")
        kept = len(report.boxes)
        status.write(f"{head}: " + "; ".join(f.summary() for f in report.findings), verbosity="WARNING",
                     data_policy={"dataset": where, "json_file": report.source, "boxes": report.total_boxes,
                                  "boxes_kept": kept, "counts": report.counts()})


def check_num_classes(ds: CocoDetection, num_classes: int, where: str) -> None:
    """TAO uses category ids as class indices; an id >= num_classes would crash on the GPU."""
    max_id, origin = ds.max_category_id()
    if max_id >= num_classes:
        raise DataError(
            f"dataset.num_classes is {num_classes} but {where} has category id {max_id} ({origin}); "
            f"category ids are class indices, so set dataset.num_classes={max_id + 1} (max category id + 1)"
        )


def check_batch(ds: CocoDetection, batch_size: int, num_gpus: int, where: str) -> None:
    if len(ds) < batch_size * num_gpus:
        raise DataError(
            f"{where} has {len(ds)} images, fewer than one batch (dataset.batch_size {batch_size} x "
            f"train.num_gpus {num_gpus}); lower dataset.batch_size or add images"
        )


def train_loader(ds: CocoDetection, cfg: DatasetConfig, seed: int, epoch: int, pin: bool, rank: int = 0,
                 world_size: int = 1, fixed_size: bool = False, multiple: int = 1) -> DataLoader:
    """Shuffled with a generator seeded by (seed, epoch), so a resumed run sees the same order
    and worker augmentation streams as an uninterrupted one; the last partial batch is dropped.

    With ``world_size`` > 1 (DDP) one permutation per (seed, epoch) is split into equal
    shares (the remainder dropped) and rank ``rank`` gets batches of ``cfg.batch_size``
    (per process, as TAO) from its share: every rank takes the same number of steps.
    ``fixed_size``: pad to ``fixed_canvas_sizes`` (static shapes for a compiled model);
    ``multiple``: else round every batch up to it (``pad_multiple``)."""
    collate_fn = _collate_fn(cfg, True, fixed_size, multiple)
    gen = torch.Generator().manual_seed(seed * 1000 + epoch + 7919 * rank)  # worker seeds differ per rank
    if world_size == 1:
        return _Loader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen,
                          num_workers=cfg.workers, pin_memory=pin, collate_fn=collate_fn,
                          worker_init_fn=_worker_init)
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return _Loader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, generator=gen,
                      num_workers=cfg.workers, pin_memory=pin, collate_fn=collate_fn,
                      worker_init_fn=_worker_init)


def val_loader(ds: CocoDetection, cfg: DatasetConfig, batch_size: int, pin: bool, rank: int = 0,
               world_size: int = 1, fixed_size: bool = False, multiple: int = 1) -> DataLoader:
    """In order; with ``world_size`` > 1 rank ``rank`` gets images rank, rank + world, ...
    (every image exactly once over the ranks, unlike DistributedSampler's padding).
    ``fixed_size`` and ``multiple`` as for ``train_loader``."""
    collate_fn = _collate_fn(cfg, False, fixed_size, multiple)
    shard = range(rank, len(ds), world_size) if world_size > 1 else None
    return _Loader(ds, batch_size=batch_size, shuffle=False, drop_last=False, sampler=shard,
                      num_workers=cfg.workers, pin_memory=pin, collate_fn=collate_fn,
                      worker_init_fn=_worker_init)
