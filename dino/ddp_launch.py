"""The DDP process launcher: ``dino train`` with ``train.num_gpus`` N > 1 as the parent.

It hosts the rendezvous store, starts N workers (``python -m dino.ddp_worker <job dir>``,
each one rank: :mod:`dino.distributed`) in its own process group, forwards SIGTERM /
SIGINT to them, stops the others when one fails, and turns the ranks' outcome into one
exit code and one SUCCESS / FAILURE line. So an orchestrator still sees one process
(group) to signal and one exit status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch.distributed as dist

from dino.config import Spec, SpecError
from dino.distributed import PG_TIMEOUT, plan_devices
from dino.runtime import Interrupted, SignalGuard
from dino.status_log import StatusLog, read_status

# Seconds the workers get between SIGTERM and SIGKILL (after a signal, or after one rank
# failed): below the launchers' 10 s, so the parent still writes its FAILURE line.
GRACE_S = float(os.environ.get("DINO_DDP_GRACE_S", "7"))
JOB_FILE = "job.pkl"


def rank_report_path(job_dir: str, rank: int) -> str:
    """Where rank ``rank`` leaves its exit code and message for the parent."""
    return os.path.join(job_dir, f"rank{rank}.json")


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
    :class:`~dino.runtime.Interrupted` (a signal reached the parent or a rank) or WorkerFailed.
    """
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
        with open(os.path.join(job_dir, JOB_FILE), "wb") as f:
            pickle.dump(WorkerJob(spec, ignored, status.path, os.getpid()), f)
        store = dist.TCPStore("127.0.0.1", 0, n, is_master=True, wait_for_workers=False, timeout=PG_TIMEOUT)
        # signals are recorded from before the first worker starts: none is left behind
        with SignalGuard(raise_interrupted=False) as guard:
            procs = _start_workers(job_dir, n, store.port)
            ends = _supervise(procs, job_dir, guard)
        del store
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(job_dir, ignore_errors=True)
    status.kpi = _last_kpi(status.path)
    failed = [e for e in ends if e.code != 0]
    if guard.received and failed:
        raise Interrupted(guard.received)
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
        procs.append(subprocess.Popen([sys.executable, "-m", "dino.ddp_worker", job_dir], env=env_r))
    return procs


def _supervise(procs: list[subprocess.Popen], job_dir: str, guard: SignalGuard) -> list[_RankEnd]:
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
        if guard.received and not forwarded:
            _signal_all(procs, guard.received)
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
        with open(rank_report_path(job_dir, rank), encoding="utf-8") as f:
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
