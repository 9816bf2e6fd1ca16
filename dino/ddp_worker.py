"""One DDP rank started by :mod:`dino.ddp_launch`: ``python -m dino.ddp_worker <job dir>``.

A worker is the ordinary trainer plus a process group; it leaves its exit code and
message in the job folder for the parent, which turns the ranks' outcome into one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sys
import time
import traceback

from dino.config import SpecError
from dino.data.coco import DataError
from dino.ddp_launch import JOB_FILE, WorkerJob, rank_report_path
from dino.distributed import SINGLE, NullStatusLog, context_from_env
from dino.runtime import Interrupted
from dino.status_log import StatusLog
from dino.train import run_training


def worker_main(job_dir: str) -> None:
    """One rank: train, then leave a report (exit code + message) for the parent."""
    with open(os.path.join(job_dir, JOB_FILE), "rb") as f:
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
    report = rank_report_path(job_dir, ctx.rank)
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
    from dino.ddp_worker import worker_main as _main  # the importable module, not this __main__ copy

    _main(sys.argv[1])
