"""Nothing lost when a worker dies: stale trials are failed and queued again.

Optuna's heartbeat marks a trial stale only after ``grace_period``; a worker on this
host that died (even ``kill -9``) is recognised at once by its recorded pid and start
time (:class:`automl.launchers.records.WorkerId`). Either
way the trial is failed and re-enqueued as WAITING with the same parameters and
user attributes, so the retry reuses the trial's results dir and the trainer resumes
from its latest checkpoint. Jobs that no live worker owns are stopped.
"""

from __future__ import annotations

import os

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from automl.launchers.records import WorkerId
from automl.optuna_private import storage_of, trial_id
from automl.study import attrs


def dead_local_worker(trial: FrozenTrial) -> bool:
    """True when ``trial`` ran in a worker process of this host that no longer exists
    (by pid and start time, so a recycled pid does not keep a dead worker alive)."""
    worker = WorkerId.parse(trial.user_attrs.get(attrs.WORKER, ""))
    if worker is None or not worker.on_this_host or worker.pid == os.getpid():
        return False
    return not worker.is_alive()


def recover_study(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail RUNNING trials of dead workers (here: by pid; elsewhere: by heartbeat) and
    interrupted trials, and queue each once for retry. Returns the failed numbers."""
    storage = storage_of(study)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)
    recovered: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_local_worker(trial):
            # attrs first: a finished trial can no longer be updated
            storage.set_trial_user_attr(trial_id(trial), attrs.FAILURE, f"worker {trial.user_attrs[attrs.WORKER]} died")
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                recovered.append(trial.number)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)  # no-op without heartbeats; its callback queues retries
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    stale = sorted(after - before)
    retried = {n for t in study.get_trials(deepcopy=False) for n in t.system_attrs.get("retry_history", [])}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        wants_retry = trial.number in recovered or trial.user_attrs.get(attrs.INTERRUPTED)
        if wants_retry and trial.number not in retried:
            retry(study, trial)
    return sorted(set(recovered) | set(stale))
