"""Multi-GPU training, seen from one rank: where it stands, its device, the collectives.

Rank r trains on ``cuda:<gpu_ids[r]>`` with NCCL, or on the CPU with gloo when no GPU is
visible (a fallback for tests). Only rank 0 writes status lines, stdout metrics and
checkpoints. A process started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) is a
rank already; ``dino train`` with ``train.num_gpus`` > 1 starts its ranks itself through
:mod:`dino.ddp_launch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import random
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from dino.config import SpecError
from dino.config.rules import check_gpu_ids
from dino.status_log import StatusLog

# Collectives wait this long: rank 0 alone runs COCOeval and writes checkpoints while the
# others wait in the next step's all-reduce. Dead peers are caught by the parent, not this.
PG_TIMEOUT = datetime.timedelta(minutes=float(os.environ.get("DINO_DDP_TIMEOUT_MIN", "60")))
RANK_SEED_STRIDE = 7919  # rank r > 0 draws augmentation / denoising noise from seed + r * stride


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` among ``world_size``, ``local_rank`` on this host."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def context_from_env() -> DistContext | None:
    """The torchrun contract (RANK, WORLD_SIZE, LOCAL_RANK), or None outside a DDP worker."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise SpecError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers, got RANK={os.environ['RANK']!r} "
                        f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}") from None
    if not 0 <= rank < world:
        raise SpecError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return DistContext(rank, local, world)


class NullStatusLog(StatusLog):
    """The status log of ranks other than 0: same interface, writes nothing."""

    def __init__(self):  # no folder to create
        self.path = os.devnull
        self.kpi: dict[str, Any] = {}

    def write(self, message: str, status: str = "RUNNING", verbosity: str = "INFO", **data: Any) -> dict[str, Any]:
        return {}


def is_secondary_rank() -> bool:
    """A DDP worker other than rank 0, by the environment (no torch needed)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0").strip() not in ("", "0")


def rank_status(status: StatusLog, ctx: DistContext) -> StatusLog:
    return status if ctx.is_main else NullStatusLog()


# ---------------------------------------------------------------- devices and the group

def plan_devices(num_gpus: int, gpu_ids: list[int]) -> tuple[str, list[str]]:
    """Backend and one device per rank: ``nccl`` on ``cuda:<gpu_ids[r]>``, or ``gloo`` on
    CPU processes when no GPU is visible. Raises SpecError when the ids do not fit."""
    violation = check_gpu_ids(num_gpus, gpu_ids)
    if violation is not None and violation.is_error:
        raise SpecError(str(violation))
    if not torch.cuda.is_available():
        return "gloo", ["cpu"] * num_gpus
    count = torch.cuda.device_count()
    hidden = [i for i in gpu_ids if i >= count]
    if hidden:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise SpecError(f"train.gpu_ids {gpu_ids}: device(s) {hidden} not visible ({count} visible, "
                        f"CUDA_VISIBLE_DEVICES={visible}); gpu ids count from 0 among the visible devices")
    return "nccl", [f"cuda:{i}" for i in gpu_ids]


def rank_gpu_ids(ctx: DistContext, gpu_ids: list[int]) -> list[int]:
    """The one-element id list rank ``ctx`` trains on (``gpu_ids[local_rank]``)."""
    if not ctx.enabled:
        return gpu_ids
    if ctx.local_rank >= len(gpu_ids):
        raise SpecError(f"train.gpu_ids {gpu_ids} has no entry for local rank {ctx.local_rank}: list one device "
                        f"id per process (train.num_gpus={ctx.world_size})")
    return [gpu_ids[ctx.local_rank]]


@contextlib.contextmanager
def process_group(ctx: DistContext, device: torch.device) -> Iterator[None]:
    """Join the group (``env://``: MASTER_ADDR / MASTER_PORT) for the block; leave it on a
    clean exit only (after a failure the process ends at once and peers see it close)."""
    if not ctx.enabled:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
                            timeout=PG_TIMEOUT, device_id=device if device.type == "cuda" else None)
    yield
    dist.barrier()  # rank 0 may still be writing the last checkpoint
    dist.destroy_process_group()


def all_mean(ctx: DistContext, value: float, device: torch.device) -> float:
    """Mean of a per-rank number over the ranks."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / ctx.world_size


def gather_to_main(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) as a list on rank 0, None elsewhere."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------- model and RNG per rank

def convert_sync_bn(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> tuple[torch.nn.Module, bool]:
    """Trainable batch norms synchronised over the ranks (statistics of the global batch);
    frozen ones are left alone. PyTorch's SyncBatchNorm runs on GPUs only, so CPU ranks
    keep per-rank statistics. Call before the optimizer is built (modules are replaced)."""
    if not (ctx.enabled and device.type == "cuda"):
        return model, False
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return (torch.nn.SyncBatchNorm.convert_sync_batchnorm(model), True) if has_bn else (model, False)


def wrap_ddp(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DDP over the ranks. Every trainable parameter reaches the loss on every step (DN,
    two-stage and box-less batches included; see tests/trainer/test_ddp.py), so the
    unused-parameter search that costs a graph walk per step stays off."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP broadcasts them
    before each forward, but the last training forward then updates each rank's copy with
    its own batch; before sharded validation every rank must hold the weights rank 0 saves."""
    if ctx.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def rank_rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states of this rank; only its own CUDA device is touched (reading every device's
    state would open a context on each GPU from every rank)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rank_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)


def restore_rank_rng(ctx: DistContext, ckpt: dict[str, Any], device: torch.device, seed: int, epoch: int) -> None:
    """Each rank's own RNG stream from a checkpoint written with the same world size; else
    rank 0's stream (CPU part) and fresh per-rank seeds for the others."""
    ranks = ckpt.get("rng_ranks")
    if isinstance(ranks, list) and len(ranks) == ctx.world_size:
        set_rank_rng_state(ranks[ctx.rank], device)
        return
    rng = ckpt["rng"]
    set_rank_rng_state({k: rng[k] for k in ("python", "numpy", "torch")}, device)
    if ctx.rank:
        seed_everything(seed + RANK_SEED_STRIDE * ctx.rank + epoch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
