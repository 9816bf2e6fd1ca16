"""The per-trial limits and the missing-metric rule on their own, with a fake clock."""

import json

import pytest

from automl.observe.metric_presence import MetricPresence, first_validation_epoch
from automl.observe.watchdog import JobLimits, JobWatchdog
from metric_extractors import EpochMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_log_is_not_a_stall_and_silence_is(tmp_path):
    log = tmp_path / "stdout.log"
    clock = Clock()
    watch = JobWatchdog([log, tmp_path / "status.json"], JobLimits(stall_timeout_s=60), clock)
    for _ in range(5):  # a line every 50 s: alive
        clock.now += 50
        with open(log, "a") as fh:
            fh.write("step\n")
        assert watch.check() is None
    clock.now += 59
    assert watch.check() is None
    clock.now += 2
    found = watch.check("after finishing epoch 3")
    assert found is not None and found.code == "stalled"
    assert "wrote nothing to stdout.log or status.json for 61 s after finishing epoch 3" in found.summary
    assert "budget.stall_timeout_s" in found.fix and "dataset.workers" in found.fix


def test_the_wall_clock_limit_counts_from_the_start_whatever_is_written(tmp_path):
    log = tmp_path / "stdout.log"
    clock = Clock()
    watch = JobWatchdog([log], JobLimits(trial_timeout_s=3600, stall_timeout_s=600), clock)
    for _ in range(12):
        clock.now += 300
        log.write_text(str(clock.now))
        assert watch.check() is None
    clock.now += 1
    found = watch.check("after epoch 7")
    assert found is not None and found.code == "trial_timeout"
    assert "ran for 60 min 1 s after epoch 7, past budget.trial_timeout_s (60 min 0 s)" in found.summary


def test_no_limits_never_fire(tmp_path):
    clock = Clock()
    watch = JobWatchdog([tmp_path / "x"], JobLimits(), clock)
    clock.now += 10**7
    assert watch.check() is None


@pytest.mark.parametrize("train, epoch", [({}, 0), ({"validation_interval": 3}, 2),
                                          ({"validation_interval": 5, "num_epochs": 2}, 1)])
def test_first_validation_epoch_from_the_spec(tmp_path, train, epoch):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"train": train}))
    assert first_validation_epoch(spec) == epoch


def _status(tmp_path, *epochs):
    path = tmp_path / "train" / "status.json"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as fh:
        for e in epochs:
            fh.write(json.dumps({"epoch": e, "status": "RUNNING", "kpi": {"val_mAP50": "0.1"}}) + "\n")


def test_missing_once_the_first_validated_epoch_is_over(tmp_path):
    presence = MetricPresence("val_mAP75", 1, tmp_path, same_file=True, grace_s=30, clock=Clock())
    _status(tmp_path, 0)
    presence.advance()
    presence.note([EpochMetrics(0, {"val_mAP50": 0.1})])
    assert not presence.missing()  # epoch 0 is not validated yet (validation_interval 2)
    _status(tmp_path, 1)
    presence.advance()
    presence.note([EpochMetrics(1, {"val_mAP50": 0.1})])
    assert presence.missing()  # the extractor reads the same file: no grace


def test_a_metric_seen_once_is_never_missing(tmp_path):
    presence = MetricPresence("val_mAP50", 0, tmp_path, same_file=True, grace_s=0, clock=Clock())
    _status(tmp_path, 0, 1, 2)
    presence.advance()
    presence.note([EpochMetrics(0, {"val_mAP50": float("nan")})])
    assert not presence.missing()


def test_a_log_read_elsewhere_gets_a_grace_and_a_later_epoch_ends_it(tmp_path):
    """stdout through a container's log stream may arrive after status.json's epoch line."""
    clock = Clock()
    presence = MetricPresence("val_mAP50", 0, tmp_path, same_file=False, grace_s=10, clock=clock)
    _status(tmp_path, 0)
    presence.advance()
    assert not presence.missing()
    clock.now += 9
    assert not presence.missing()
    clock.now += 2
    assert presence.missing()
    late = MetricPresence("val_mAP50", 0, tmp_path / "other", same_file=False, grace_s=10, clock=Clock())
    (tmp_path / "other").mkdir()
    _status(tmp_path / "other", 0, 1)
    late.advance()
    assert late.missing()  # epoch 1 finished too: it is not late, it is missing


def test_without_a_status_file_the_extractors_epochs_tell_progress(tmp_path):
    presence = MetricPresence("val_mAP50", 0, tmp_path, same_file=False, grace_s=0, clock=Clock())
    presence.note([EpochMetrics(0, {"train_loss": 3.0})])
    presence.advance()
    assert not presence.missing()  # epoch 0 may still print its validation
    presence.note([EpochMetrics(1, {"train_loss": 2.0})])
    presence.advance()
    assert presence.missing()
