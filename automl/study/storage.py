"""The study's RDB storage, with a queue pop that is atomic across this process's threads.

Optuna hands a queued (WAITING) trial to the thread whose ``set_trial_state_values(
RUNNING)`` finds it still WAITING; RDBStorage makes that check-and-set atomic with
``SELECT ... FOR UPDATE``, which SQLite ignores. With several trials per run (slots,
packing) two threads then both take the same queued trial, an out-of-memory or
recovery retry for instance, and run two jobs in one results dir (seen in
tests/orchestrator/test_packing.py; Optuna issue 4002). A lock around the transition
serialises the threads of one process; PostgreSQL's row lock covers other processes.
"""

from __future__ import annotations

import threading
from typing import Sequence

from optuna.storages import RDBStorage
from optuna.trial import TrialState


class ThreadSafeRDBStorage(RDBStorage):
    """RDBStorage whose trial state changes are serialised within the process."""

    _state_lock = threading.Lock()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._state_lock:
            return super().set_trial_state_values(trial_id, state, values)
