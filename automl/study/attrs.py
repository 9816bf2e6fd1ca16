"""The trial and study attributes a run writes, and a typed view to read them back.

Attributes live in the study storage (so other workers, the dashboard and the report
see them); their names are spelled here once. A retried trial inherits its
predecessor's attributes: ``results_dir`` on purpose (it resumes there), the outcome
ones are cleared (:data:`CLEARED_ON_RETRY`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.trial import FrozenTrial, Trial

# trial user attributes
RESULTS_DIR = "results_dir"  # the trial's results dir (spec.yaml, stdout.log, train/)
SPEC_PATH = "spec_path"  # its rendered spec.yaml
WORKER = "worker"  # host:pid:start ticks of the orchestrator process that ran it
DEVICE = "device"  # "cuda:0,cuda:1" or "cpu"
JOB_ID = "job_id"  # the launcher's id: pid or container id
INTERRUPTED = "interrupted"  # stopped by Ctrl-C / SIGTERM: retried on the next run
FAILURE = "failure"  # one-line diagnosis of a failed trial
FAILURE_CODE = "failure_code"  # stable code of that diagnosis, e.g. "cuda_oom"
FAILURE_FIX = "failure_fix"  # what to change
EXIT_CODE = "exit_code"
PRUNE_EPOCH = "prune_epoch"
LOG_TAIL = "log_tail"  # the last lines of the job's log
SLOT = "slot"  # the slot it ran on: "cuda:0", "cuda:0,cuda:1" or "cpu"
PACKED_WITH = "packed_with"  # trial numbers on the same slot when its job started
RAN_BESIDE = "ran_beside"  # every trial that shared the slot while its job ran
JOB_STARTED_AT = "job_started_at"  # ISO time its job was launched (the trial may have waited for a slot)
JOB_ENDED_AT = "job_ended_at"  # ISO time its job was seen gone
PEAK_GPU_MEMORY_MIB = "peak_gpu_memory_mib"  # the largest peak the job reported (torch reserved, MiB)
STOP_SECONDS = "stop_seconds"  # prune (or stop) decision to the job gone
PRUNED_BY = "pruned_by"  # the rules of a composite pruner that fired
RUN_ALONE = "run_alone"  # it ran out of GPU memory beside others: runs alone from now
OOM_RETRY = "oom_retry"  # what the out-of-memory attempt beside others left (kept on purpose)
WARM_START_FROM = "warm_start_from"  # "<study>#<n>": an enqueued parameter set of an earlier night
SEEDED_FROM = "seeded_from"  # "<study>#<n>": a trial copied in as sampler history; never run here

CLEARED_ON_RETRY = (INTERRUPTED, FAILURE, FAILURE_CODE, FAILURE_FIX, PRUNE_EPOCH, PRUNED_BY, STOP_SECONDS)
# failure codes that every other trial would repeat (a config mistake): the study stops at once
STOPS_STUDY = ("metric_missing",)

# study user attributes
STUDY_METRIC = "metric"  # the metric's name, fixed at creation (automl.study.identity)
STUDY_AGGREGATE = "aggregate"  # metric.aggregate: best | last, fixed at creation
STUDY_EXPORT = "best_export"  # which worker exports which trial (automl.study.export_claim)
STUDY_BEST_SPEC = "best_spec"  # optional: a best spec recorded by other tools
STUDY_LAUNCHER = "launcher"  # {"name", "options"} the trials ran with (no environment: it may hold secrets)
STUDY_TRAINER_COMMAND = "trainer_command"  # e.g. ["dino", "train"]: tasks after the study derive theirs from it


@dataclasses.dataclass(frozen=True)
class TrialAttrs:
    """What a run recorded on one trial (None where it did not)."""

    results_dir: str | None = None
    spec_path: str | None = None
    worker: str | None = None
    device: str | None = None
    job_id: str | None = None
    interrupted: bool = False
    failure: str | None = None
    failure_code: str | None = None
    failure_fix: str | None = None
    exit_code: int | None = None
    prune_epoch: int | None = None
    log_tail: str | None = None
    slot: str | None = None
    packed_with: tuple[int, ...] = ()
    ran_beside: tuple[int, ...] = ()
    job_started_at: str | None = None
    job_ended_at: str | None = None
    peak_gpu_memory_mib: int | None = None
    stop_seconds: float | None = None
    pruned_by: str | None = None
    run_alone: bool = False
    oom_retry: str | None = None
    warm_start_from: str | None = None
    seeded_from: str | None = None

    @classmethod
    def of(cls, trial: Trial | FrozenTrial) -> TrialAttrs:
        attrs: dict[str, Any] = trial.user_attrs
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in attrs.items() if k in known and v is not None}
        values["interrupted"] = bool(values.get("interrupted"))
        values["run_alone"] = bool(values.get("run_alone"))
        for key in ("packed_with", "ran_beside"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)
