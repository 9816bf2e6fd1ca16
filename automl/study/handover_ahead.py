"""The best trial's hand-over (export and pictures) started before the study ends.

At the end of the GPU smoke study the export (a CPU trace and an ONNX Runtime check) and
the pictures (an inference job) kept the card idle for 25-36 s after the last trial, in
a study whose target is 8 minutes (``bench/README.md``). Once every trial of the budget
has started, a finished trial that is the best so far is very often the final best
while the last trials still train. So from then on, each time the best changes, its
hand-over starts in the background, one at a time (the newest best waits for the
running one: both would write the same files). At the end, ``finalize_study`` takes the
result when the final best and its checkpoint are the ones handed over ahead, and
otherwise runs the hand-over as before; only the wall time changes, not what is handed
over.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.study import attrs
from automl.study.best_checkpoint import checkpoint_for_value
from automl.study.budget import may_start
from automl.study.results import hand_over

if TYPE_CHECKING:
    from automl.study.showcase import Showcase

Exporter = Callable[[FrozenTrial, Path, Path], "Path | None"]
Showcaser = Callable[[FrozenTrial, Path], "Showcase | None"]


@dataclasses.dataclass
class AheadResult:
    """One hand-over run ahead: the trial and checkpoint it was for, and what it gave."""

    trial: int
    checkpoint: Path
    exported_model: Path | None = None
    showcase: Showcase | None = None


class HandOverAhead:
    """An Optuna callback that hands the best trial over once no trial is left to start.

    Args:
        n_trials: the study's budget (None: open-ended, nothing runs ahead).
        best: ``study -> FrozenTrial | None``, the study's own best (``best_own_trial``).
        aggregate / metric: how the trial's value picks its checkpoint.
        exporter / showcase: the end-of-study hand-over's two tasks.
        stop: set on Ctrl-C; no new hand-over starts after it.
    """

    def __init__(self, n_trials: int | None, best: Callable[[optuna.Study], FrozenTrial | None], aggregate: str,
                 metric: str, exporter: Exporter | None, showcase: Showcaser | None,
                 stop: threading.Event, on_start: Callable[[int], None] = lambda number: None):
        self.n_trials, self._best, self.aggregate, self.metric = n_trials, best, aggregate, metric
        self.exporter, self.showcase, self.stop, self.on_start = exporter, showcase, stop, on_start
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand-over-ahead")
        # trial -> its run, in the order queued (they run one at a time; a trial is queued once)
        self._futures: dict[int, concurrent.futures.Future] = {}

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's callback, after each trial of this worker finishes."""
        if self.n_trials is None or self.stop.is_set() or (self.exporter is None and self.showcase is None):
            return
        trials = study.get_trials(deepcopy=False)
        if may_start(trials, self.n_trials) or any(t.state == TrialState.WAITING for t in trials):
            return  # trials are still to start: the best may well change
        best = self._best(study)
        if best is None or best.state != TrialState.COMPLETE:
            return
        choice = checkpoint_for_value(best, self.aggregate, self.metric)
        if choice.path is None:
            return
        with self._lock:
            if best.number in self._futures:
                return
            self.on_start(best.number)
            self._futures[best.number] = self._pool.submit(self._run, best, choice.path)

    def _run(self, best: FrozenTrial, checkpoint: Path) -> AheadResult:
        result = AheadResult(best.number, checkpoint)
        if not self.stop.is_set():
            result.exported_model, result.showcase = hand_over(best, Path(best.user_attrs[attrs.SPEC_PATH]),
                                                               checkpoint, self.exporter, self.showcase)
        return result

    def take(self, trial: int, checkpoint: Path) -> AheadResult | None:
        """After the study: the hand-over run ahead for ``trial`` and ``checkpoint``
        (waited for), or None when none was (the caller hands over as usual). Every
        other hand-over still running is waited for too: they write the same files."""
        with self._lock:
            futures = dict(self._futures)
        self._pool.shutdown(wait=True)
        if not futures or list(futures)[-1] != trial:
            return None  # not run ahead, or a later run wrote over its files
        try:
            result = futures[trial].result()
        except Exception:  # noqa: BLE001 - a failed early run is simply redone at the end
            return None
        if Path(result.checkpoint) != Path(checkpoint):
            return None
        if (self.exporter is not None and result.exported_model is None) or self.stop.is_set():
            return None  # an export that failed or was stopped is retried by the end-of-study hand-over
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True)
