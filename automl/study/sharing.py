"""What a trial records about sharing its slot, and the out-of-memory retry alone.

A trial that runs out of GPU memory while other trials shared its slot is not failed:
the objective ends that attempt, marks the trial ``run_alone`` and runs it again in the
same Optuna trial (same parameters, results dir and checkpoints, so the trainer resumes
where it stopped) on a slot it has to itself. A second out-of-memory error, alone, fails
it with the usual diagnosis. Staying in the same trial keeps the study's trial count
and the consecutive-failure guard exact, and a worker that dies during the retry leaves
``run_alone`` on the trial, which recovery's re-queued copy inherits.
"""

from __future__ import annotations

import datetime as dt
import time

import optuna

from automl.launchers.base import JobHandle, JobResult
from automl.observe.diagnosis import Diagnosis
from automl.study import attrs
from automl.study.slots import Lease


class RetryAlone(Exception):
    """This attempt ran out of memory beside neighbours; run the trial again, alone."""


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


def set_lease_attrs(trial: optuna.Trial, lease: Lease) -> None:
    """At launch: the slot, who is already on it, and when."""
    trial.set_user_attr(attrs.SLOT, lease.slot.name)
    trial.set_user_attr(attrs.PACKED_WITH, list(lease.packed_with))
    trial.set_user_attr(attrs.JOB_STARTED_AT, _now())


def finish_lease_attrs(trial: optuna.Trial, lease: Lease) -> None:
    """Once the job is gone: when, every trial that shared the slot meanwhile, its peak memory."""
    trial.set_user_attr(attrs.JOB_ENDED_AT, _now())
    trial.set_user_attr(attrs.RAN_BESIDE, sorted(lease.neighbours))
    if lease.peak_mib is not None:
        trial.set_user_attr(attrs.PEAK_GPU_MEMORY_MIB, lease.peak_mib)


def timed_stop(trial: optuna.Trial, handle: JobHandle, grace_period: float) -> JobResult:
    """Stop the job and record the seconds from the decision to the job gone (GPU freed)."""
    began = time.monotonic()
    result = handle.stop(grace_period)
    trial.set_user_attr(attrs.STOP_SECONDS, round(time.monotonic() - began, 2))
    return result


def retry_alone(trial: optuna.Trial, lease: Lease, diagnosis: Diagnosis, exit_code: int) -> bool:
    """True when this failure earns one retry alone (CUDA OOM beside neighbours); records
    why on the trial and tells the pool, which packs fewer under ``auto``."""
    if diagnosis.code != "cuda_oom" or lease.alone or not lease.was_packed or trial.user_attrs.get(attrs.OOM_RETRY):
        return False
    beside = ", ".join(str(n) for n in sorted(lease.neighbours))
    trial.set_user_attr(attrs.OOM_RETRY, f"exit code {exit_code} at {_now()} on {lease.slot.name} beside "
                                         f"trial(s) {beside}: {diagnosis.summary}")
    trial.set_user_attr(attrs.RUN_ALONE, True)
    lease.report_oom()
    return True
