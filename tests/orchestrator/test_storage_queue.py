"""A queued trial goes to exactly one of the threads asking at once, on SQLite too
(with Optuna's plain RDBStorage two threads often take the same one: see
automl/study/storage.py)."""

import threading

import optuna

from automl.study.storage import ThreadSafeRDBStorage


def _duplicates(storage_class, url, n_queued=6, n_threads=8):
    storage = storage_class(url)
    study = optuna.create_study(storage=storage, study_name="q")
    for i in range(n_queued):
        study.enqueue_trial({"x": float(i)})
    got, barrier = [], threading.Barrier(n_threads)

    def ask():
        barrier.wait()
        trial = study.ask()
        got.append(trial.number)

    threads = [threading.Thread(target=ask) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(got) - len(set(got))


def test_concurrent_asks_never_pop_the_same_queued_trial(tmp_path):
    for attempt in range(2):
        assert _duplicates(ThreadSafeRDBStorage, f"sqlite:///{tmp_path}/safe{attempt}.db") == 0
