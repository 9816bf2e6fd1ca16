"""Multi-GPU training: one process per device, DistributedDataParallel, rank 0 speaks.

``dino train`` with ``train.num_gpus`` N > 1 becomes a small launcher (the parent): it
hosts the rendezvous store, starts N workers (``python -m dino.distributed <job dir>``)
in its own process group, forwards SIGTERM / SIGINT to them, stops the others when one
fails, and turns the ranks' outcome into one exit code and one SUCCESS / FAILURE line.
So an orchestrator still sees one process (group) to signal and one exit status.

A worker is the ordinary trainer plus a process group: rank r trains on
``cuda:<gpu_ids[r]>`` with NCCL, or on the CPU with gloo when no GPU is visible (a
fallback for tests). Only rank 0 writes status lines, stdout metrics and checkpoints.
A process started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) is a worker
already: it joins through ``env://`` and nothing is spawned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from dino.config import Spec, SpecError
from dino.status_log import StatusLog, read_status

# Seconds the workers get between SIGTERM and SIGKILL (after a signal, or after one rank
# failed): below the launchers' 10 s, so the parent still writes its FAILURE line.
GRACE_S = float(os.environ.get("DINO_DDP_GRACE_S", "7"))
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
    if len(gpu_ids) != num_gpus or len(set(gpu_ids)) != len(gpu_ids) or min(gpu_ids) < 0:
        raise SpecError(f"train.num_gpus is {num_gpus} but train.gpu_ids is {gpu_ids}: list {num_gpus} distinct "
                        f"device ids (e.g. train.gpu_ids={list(range(num_gpus))}), one per process")
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


# ---------------------------------------------------------------- the parent (launcher)

@dataclasses.dataclass
class WorkerJob:
    """What the parent hands each worker (pickled into the job folder)."""

    spec: Spec
    ignored: list[str]
    status_path: str
    parent_pid: int


class WorkerFailed(RuntimeError):
    """A rank failed while training; the message names the rank and its error."""


@dataclasses.dataclass
class _RankEnd:
    rank: int
    code: int  # the worker's exit code (negative: killed by that signal)
    message: str
    at: float  # when the rank reported (or was seen to exit)


def launch(spec: Spec, ignored: list[str], status: StatusLog, log=print) -> None:
    """Run ``spec`` on ``train.num_gpus`` worker processes and wait for them.

    Returns when every rank finished; raises SpecError (a rank found bad input, exit 2),
    ``dino.train.Interrupted`` (a signal reached the parent or a rank) or WorkerFailed.
    """
    from dino.train import Interrupted

    n = spec.train.num_gpus
    backend, devices = plan_devices(n, spec.train.gpu_ids)
    where = ", ".join(devices) if backend == "nccl" else "CPU processes (no CUDA device visible)"
    note = (f"Distributed training: {n} processes, {backend} on {where}; dataset.batch_size "
            f"{spec.dataset.batch_size} per process (global batch {spec.dataset.batch_size * n})")
    log(note, flush=True)
    status.write(note)
    sys.stdout.flush()
    sys.stderr.flush()

    job_dir = tempfile.mkdtemp(prefix="dino-ddp-")
    procs: list[subprocess.Popen] = []
    try:
        with open(os.path.join(job_dir, "job.pkl"), "wb") as f:
            pickle.dump(WorkerJob(spec, ignored, status.path, os.getpid()), f)
        store = dist.TCPStore("127.0.0.1", 0, n, is_master=True, wait_for_workers=False, timeout=PG_TIMEOUT)
        with _CatchSignals() as received:  # from before the first worker starts: none is left behind
            procs = _start_workers(job_dir, n, store.port)
            ends = _supervise(procs, job_dir, received)
        del store
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(job_dir, ignore_errors=True)
    status.kpi = _last_kpi(status.path)
    failed = [e for e in ends if e.code != 0]
    if received and failed:
        raise Interrupted(received[0])
    if not failed:
        return
    first = min(failed, key=lambda e: e.at)
    if first.code == 2:
        raise SpecError(first.message)
    if first.code > 128 and first.code - 128 in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        raise Interrupted(first.code - 128)
    raise WorkerFailed(f"rank {first.rank}: {first.message}")


def _start_workers(job_dir: str, n: int, port: int) -> list[subprocess.Popen]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    # one process per device: split the cores instead of every rank taking all of them
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // n)))
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
               TORCHELASTIC_USE_AGENT_STORE="True")  # the parent hosts the store, every rank is a client
    procs = []
    for rank in range(n):
        env_r = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-m", "dino.distributed", job_dir], env=env_r))
    return procs


class _CatchSignals:
    """SIGTERM / SIGINT recorded in a list (the one ``with`` yields) instead of ending the parent."""

    def __enter__(self) -> list[int]:
        self.received: list[int] = []
        self._old = {s: signal.signal(s, lambda signum, _frame: self.received.append(signum))
                     for s in (signal.SIGTERM, signal.SIGINT)}
        return self.received

    def __exit__(self, *exc) -> bool:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


def _supervise(procs: list[subprocess.Popen], job_dir: str, received: list[int]) -> list[_RankEnd]:
    """Wait for the workers. A signal to the parent is forwarded; a rank that fails gets the
    others SIGTERMed; whatever still runs ``GRACE_S`` later is SIGKILLed. Returns how each
    rank ended."""
    seen: dict[int, float] = {}
    forwarded, stopping, deadline = False, False, None
    while True:
        now = time.monotonic()
        for rank, p in enumerate(procs):
            if rank not in seen and p.poll() is not None:
                seen[rank] = time.time()
        if received and not forwarded:
            _signal_all(procs, received[0])
            forwarded, deadline = True, deadline or now + GRACE_S
        if not stopping and any(procs[r].returncode != 0 for r in seen):
            _signal_all(procs, signal.SIGTERM)
            stopping, deadline = True, deadline or now + GRACE_S
        if len(seen) == len(procs):
            break
        if deadline is not None and now > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.05)
    return [_rank_end(job_dir, r, p.returncode, seen[r]) for r, p in enumerate(procs)]


def _signal_all(procs: list[subprocess.Popen], signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)


def _rank_end(job_dir: str, rank: int, code: int, exited_at: float) -> _RankEnd:
    try:
        with open(os.path.join(job_dir, f"rank{rank}.json"), encoding="utf-8") as f:
            report = json.load(f)
        return _RankEnd(rank, code, report["message"], report["at"])
    except (OSError, ValueError, KeyError):
        pass
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        return _RankEnd(rank, 128 - code, f"worker process killed by {name}{hint}", exited_at)
    return _RankEnd(rank, code, f"worker process exited with code {code}", exited_at)


def _last_kpi(path: str) -> dict[str, Any]:
    """The kpi the ranks left in status.json, so the parent's last line repeats it (TAO)."""
    with contextlib.suppress(OSError):
        for line in reversed(read_status(path)):
            if isinstance(line.get("kpi"), dict):
                return dict(line["kpi"])
    return {}


# ---------------------------------------------------------------- a worker

def worker_main(job_dir: str) -> None:
    """One rank: train, then leave a report (exit code + message) for the parent."""
    from dino.data.coco import DataError
    from dino.train import Interrupted, run_training

    with open(os.path.join(job_dir, "job.pkl"), "rb") as f:
        job: WorkerJob = pickle.load(f)
    _die_with_parent(job.parent_pid)
    ctx = context_from_env() or SINGLE
    code, message = 0, ""
    try:
        run_training(job.spec, job.ignored, StatusLog(job.status_path) if ctx.is_main else NullStatusLog())
    except (SpecError, DataError) as exc:
        code, message = 2, str(exc)
    except Interrupted as exc:
        code, message = 128 + exc.signum, str(exc)
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except BaseException as exc:  # reported to the parent, which fails the run
        print(f"[rank {ctx.rank}] training failed:", file=sys.stderr, flush=True)
        traceback.print_exc()
        code, message = 1, f"{type(exc).__name__}: {exc}"
    if code == 2:
        print(f"[rank {ctx.rank}] error: {message}", file=sys.stderr, flush=True)
    report = os.path.join(job_dir, f"rank{ctx.rank}.json")
    with contextlib.suppress(OSError):
        with open(report + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"code": code, "message": message, "at": time.time()}, f)
        os.replace(report + ".tmp", report)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: slow under load, and after a failure a peer may be gone


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this worker if the parent dies without stopping it (Linux); no orphans
    keep a GPU after ``kill -9`` of the launcher."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


if __name__ == "__main__":
    from dino.distributed import worker_main as _main  # the importable module, not this __main__ copy

    _main(sys.argv[1])
