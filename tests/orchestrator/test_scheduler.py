"""Nightly scheduling: when runs happen and what each night runs (real subprocesses)."""

import datetime as dt

import pytest

from automl.study.schedule import NightlyScheduler, next_run, nightly_args, parse_daily_at


def test_next_run_is_strictly_in_the_future():
    at = dt.time(2, 0)
    assert next_run(dt.datetime(2026, 1, 1, 1, 59), at) == dt.datetime(2026, 1, 1, 2, 0)
    assert next_run(dt.datetime(2026, 1, 1, 2, 0), at) == dt.datetime(2026, 1, 2, 2, 0)
    assert next_run(dt.datetime(2026, 12, 31, 23, 0), at) == dt.datetime(2027, 1, 1, 2, 0)


def test_parse_daily_at_rejects_garbage():
    assert parse_daily_at("02:30") == dt.time(2, 30)
    with pytest.raises(ValueError, match="HH:MM"):
        parse_daily_at("2am")


def test_each_night_its_own_study():
    day = dt.date(2026, 11, 25)
    assert nightly_args(["run", "--study-name", "dino"], day, "date") == ["run", "--study-name", "dino-20261125"]
    assert nightly_args(["run"], day, "date")[-2:] == ["--study-name", "nightly-20261125"]
    assert nightly_args(["run", "--study-name", "dino"], day, None) == ["run", "--study-name", "dino"]


def test_scheduler_waits_for_the_slot_and_runs_a_real_child(monkeypatch):
    clock = [dt.datetime(2026, 11, 25, 1, 0)]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += dt.timedelta(seconds=seconds)

    logs = []
    # `automl --help` is a real child process of the real CLI; exit code 0
    sched = NightlyScheduler(dt.time(2, 0), ["--help"], now=lambda: clock[0], sleep=sleep, log=logs.append)
    assert sched.run_forever(max_runs=1) == [0]
    assert sum(slept) == pytest.approx(3600)
    assert clock[0] == dt.datetime(2026, 11, 25, 2, 0)
    assert any("next run at 2026-11-25 02:00" in line for line in logs)
