"""Scheduling with a controllable clock: cron fire times (daylight-saving changes too),
no overlap (in one process and across processes), a missed run runs once, budgets."""

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from zoneinfo import ZoneInfo

import pytest

from automl.cli import main as automl_main
from automl.study.cron import UTC, CronSchedule, parse_daily_at
from automl.study.run_lock import LockHeld, is_held, run_lock
from automl.study.schedule import (
    ChildProcess,
    NextRun,
    RunFinished,
    RunSkipped,
    RunStarting,
    Scheduler,
    ScheduleState,
    hard_limit,
    run_arguments,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone, *fields, fold=0):
    return dt.datetime(*fields, tzinfo=zone, fold=fold)


def fires(expression, zone_name, start, n):
    schedule = CronSchedule.parse(expression, zone_name)
    out, t = [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(t)
    return out


# ------------------------------------------------------------------ fire times


@pytest.mark.parametrize("expression, zone, start, expected", [
    ("0 2 * * *", "UTC", at(UTC, 2026, 1, 1, 1, 59),
     [at(UTC, 2026, 1, 1, 2), at(UTC, 2026, 1, 2, 2), at(UTC, 2026, 1, 3, 2)]),
    ("0 2 * * *", "UTC", at(UTC, 2026, 1, 1, 2, 0),  # strictly after: the slot itself is not "next"
     [at(UTC, 2026, 1, 2, 2), at(UTC, 2026, 1, 3, 2), at(UTC, 2026, 1, 4, 2)]),
    ("30 1 * * 1-5", "Europe/Berlin", at(BERLIN, 2026, 11, 27, 12),  # Friday noon: Mon, Tue, Wed
     [at(BERLIN, 2026, 11, 30, 1, 30), at(BERLIN, 2026, 12, 1, 1, 30), at(BERLIN, 2026, 12, 2, 1, 30)]),
    ("0 */6 * * *", "UTC", at(UTC, 2026, 12, 31, 13),
     [at(UTC, 2026, 12, 31, 18), at(UTC, 2027, 1, 1, 0), at(UTC, 2027, 1, 1, 6)]),
    ("15 3 1 * *", "America/New_York", at(NEW_YORK, 2026, 1, 15),
     [at(NEW_YORK, 2026, 2, 1, 3, 15), at(NEW_YORK, 2026, 3, 1, 3, 15), at(NEW_YORK, 2026, 4, 1, 3, 15)]),
])
def test_next_fire_times(expression, zone, start, expected):
    assert fires(expression, zone, start, 3) == expected


def test_the_spring_change_runs_a_skipped_time_once_right_after_the_gap():
    # Europe/Berlin jumps from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist
    got = fires("30 2 * * *", "Europe/Berlin", at(BERLIN, 2026, 3, 28, 12), 3)
    assert got == [at(BERLIN, 2026, 3, 29, 3, 0), at(BERLIN, 2026, 3, 30, 2, 30), at(BERLIN, 2026, 3, 31, 2, 30)]
    utc = [t.astimezone(UTC) for t in got]
    assert utc[0] == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # one real hour after the last CET slot
    assert (utc[1] - utc[0]) == dt.timedelta(hours=23, minutes=30)


def test_the_autumn_change_runs_a_repeated_time_once():
    # 02:00-03:00 happens twice in Berlin on 2026-10-25 (CEST, then CET): one run, the first
    got = fires("30 2 * * *", "Europe/Berlin", at(BERLIN, 2026, 10, 24, 12), 3)
    assert [t.astimezone(UTC) for t in got] == [dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                                                dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
                                                dt.datetime(2026, 10, 27, 1, 30, tzinfo=UTC)]
    # asked from inside the repeated hour (after the first 02:30), it is tomorrow's
    inside = at(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert CronSchedule.parse("30 2 * * *", "Europe/Berlin").next_after(inside).astimezone(UTC) == \
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_new_york_changes_too():
    spring = fires("30 2 * * *", "America/New_York", at(NEW_YORK, 2026, 3, 7, 12), 2)  # DST starts 03-08
    assert [t.astimezone(UTC) for t in spring] == [dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
                                                   dt.datetime(2026, 3, 9, 6, 30, tzinfo=UTC)]
    autumn = fires("30 1 * * *", "America/New_York", at(NEW_YORK, 2026, 10, 31, 12), 2)  # DST ends 11-01
    assert [t.astimezone(UTC) for t in autumn] == [dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                                                   dt.datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]


def test_latest_slot_at_or_before():
    s = CronSchedule.parse("0 2 * * *", "UTC")
    assert s.latest_at_or_before(at(UTC, 2026, 5, 3, 2, 0)) == at(UTC, 2026, 5, 3, 2)
    assert s.latest_at_or_before(at(UTC, 2026, 5, 3, 1, 59)) == at(UTC, 2026, 5, 2, 2)


def test_daily_at_is_the_cron_shorthand_and_bad_input_says_what_to_write():
    assert parse_daily_at("02:30") == dt.time(2, 30)
    assert CronSchedule.daily_at(dt.time(2, 30), "UTC").expression == "30 2 * * *"
    with pytest.raises(ValueError, match="HH:MM"):
        parse_daily_at("2am")
    for bad in ("0 2 * *", "61 2 * * *", "every night"):
        with pytest.raises(ValueError, match="5-field cron expression"):
            CronSchedule.parse(bad)
    with pytest.raises(ValueError, match="IANA"):
        CronSchedule.parse("0 2 * * *", "Mars/Olympus")


# ------------------------------------------------------------------ the loop, on a fake clock


class FakeClock:
    """Real time is UTC (as SystemClock's): local wall-clock arithmetic would skip or repeat
    an hour at each daylight-saving change."""

    def __init__(self, start, jumps=()):
        self.t = start.astimezone(UTC)
        self.slept = []
        self.jumps = list(jumps)  # extra time that passes during the n-th sleep (a suspended machine)

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.t += dt.timedelta(seconds=seconds)
        if self.jumps:
            self.t += self.jumps.pop(0)


class FakeChild:
    """Stands for the child process: each run takes ``duration`` on the fake clock."""

    def __init__(self, clock, duration=dt.timedelta(hours=1), code=0):
        self.clock, self.duration, self.code = clock, duration, code
        self.runs = []

    def __call__(self, args, limit_s):
        self.runs.append((self.clock.now(), list(args), limit_s))
        self.clock.t += self.duration
        return self.code, False


def scheduler(tmp_path, clock, child, expression="0 2 * * *", tz="Europe/Berlin", **kw):
    events = []
    sched = Scheduler(CronSchedule.parse(expression, tz), ["nightly", "--config", "n.yaml"],
                      ScheduleState(tmp_path / "state.json"), tmp_path / "run.lock",
                      clock=clock, run_child=child, emit=events.append, **kw)
    return sched, events


def test_runs_at_each_slot_across_the_autumn_change(tmp_path):
    clock = FakeClock(at(BERLIN, 2026, 10, 23, 12))
    child = FakeChild(clock)
    sched, events = scheduler(tmp_path, clock, child, expression="30 2 * * *")
    assert sched.run_forever(max_runs=3) == [0, 0, 0]
    started = [t.astimezone(UTC) for t, _, _ in child.runs]
    assert started == [dt.datetime(2026, 10, 24, 0, 30, tzinfo=UTC), dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                       dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]
    # each night's run is told its date
    assert [args[args.index("--night") + 1] for _, args, _ in child.runs] == ["2026-10-24", "2026-10-25", "2026-10-26"]
    assert max(clock.slept) <= 60  # the clock is re-read at least every minute
    assert sum(isinstance(e, NextRun) for e in events) == 3


def test_a_restarted_scheduler_does_not_repeat_the_last_slot(tmp_path):
    clock = FakeClock(at(UTC, 2026, 6, 1, 1, 0))
    child = FakeChild(clock, duration=dt.timedelta(minutes=10))
    sched, _ = scheduler(tmp_path, clock, child, tz="UTC")
    sched.run_forever(max_runs=1)  # runs 06-01 02:00, ends 02:10
    again, _ = scheduler(tmp_path, clock, child, tz="UTC")  # restarted at 02:10
    again.run_forever(max_runs=1)
    assert [t for t, _, _ in child.runs] == [at(UTC, 2026, 6, 1, 2), at(UTC, 2026, 6, 2, 2)]


def test_a_missed_run_runs_once_not_three_times(tmp_path):
    """The machine was off for three nights: on start-up the latest missed slot runs once."""
    ScheduleState(tmp_path / "state.json").record(at(UTC, 2026, 6, 1, 2))
    clock = FakeClock(at(UTC, 2026, 6, 4, 8, 0))  # back on at 08:00, three slots later
    child = FakeChild(clock)
    sched, events = scheduler(tmp_path, clock, child, tz="UTC")
    sched.run_forever(max_runs=2)
    assert [t for t, _, _ in child.runs] == [at(UTC, 2026, 6, 4, 8), at(UTC, 2026, 6, 5, 2)]
    starting = [e for e in events if isinstance(e, RunStarting)]
    assert starting[0].slot == at(UTC, 2026, 6, 4, 2) and starting[0].late_s == 6 * 3600
    assert "--night" in child.runs[0][1] and "2026-06-04" in child.runs[0][1]


def test_a_suspended_machine_catches_up_once(tmp_path):
    clock = FakeClock(at(UTC, 2026, 6, 1, 1, 0), jumps=[dt.timedelta(days=3)])  # asleep for 3 days at 01:00
    child = FakeChild(clock, duration=dt.timedelta(minutes=10))
    sched, events = scheduler(tmp_path, clock, child, tz="UTC", catch_up_s=24 * 3600)
    sched.run_forever(max_runs=2)
    # woke at 01:01 on 06-04: three slots missed (06-01, 06-02, 06-03), one run, for the latest
    assert [t for t, _, _ in child.runs] == [at(UTC, 2026, 6, 4, 1, 1), at(UTC, 2026, 6, 4, 2, 0)]
    assert [e.slot for e in events if isinstance(e, RunStarting)] == [at(UTC, 2026, 6, 3, 2), at(UTC, 2026, 6, 4, 2)]


def test_a_slot_missed_longer_than_the_catch_up_window_is_skipped(tmp_path):
    ScheduleState(tmp_path / "state.json").record(at(UTC, 2026, 6, 1, 2))
    clock = FakeClock(at(UTC, 2026, 6, 4, 20, 0))  # 18 h after the 06-04 slot
    child = FakeChild(clock)
    sched, events = scheduler(tmp_path, clock, child, tz="UTC", catch_up_s=12 * 3600)
    sched.run_forever(max_runs=1)
    assert [t for t, _, _ in child.runs] == [at(UTC, 2026, 6, 5, 2)]
    skipped = [e for e in events if isinstance(e, RunSkipped)]
    assert len(skipped) == 1 and "catch-up window" in skipped[0].reason


def test_a_run_still_going_at_the_next_slot_is_not_started_twice(tmp_path):
    """A run of 50 h spans two slots: the runs stay sequential and the missed slots become one run."""
    clock = FakeClock(at(UTC, 2026, 6, 1, 1, 0))
    child = FakeChild(clock, duration=dt.timedelta(hours=50))
    sched, events = scheduler(tmp_path, clock, child, tz="UTC")
    sched.run_forever(max_runs=2)
    (first, _, _), (second, _, _) = child.runs
    assert first == at(UTC, 2026, 6, 1, 2)
    assert second == at(UTC, 2026, 6, 3, 4)  # right after the first ended: slot 06-03 02:00, once
    assert [e.slot for e in events if isinstance(e, RunStarting)] == [at(UTC, 2026, 6, 1, 2), at(UTC, 2026, 6, 3, 2)]


def test_a_slot_whose_previous_run_holds_the_lock_in_another_process_is_skipped(tmp_path):
    lock = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from automl.study.run_lock import run_lock
        with run_lock({str(lock)!r}, what="a night started by cron"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        clock = FakeClock(at(UTC, 2026, 6, 1, 1, 59))
        child = FakeChild(clock)
        events = []

        class Seen(Exception):
            pass

        def emit(event):
            events.append(event)
            if isinstance(event, RunSkipped):
                raise Seen

        sched = Scheduler(CronSchedule.parse("0 2 * * *", "UTC"), ["nightly", "--config", "n.yaml"],
                          ScheduleState(tmp_path / "state.json"), lock, clock=clock, run_child=child, emit=emit)
        with pytest.raises(Seen):
            sched.run_forever(max_runs=1)
        (skipped,) = [e for e in events if isinstance(e, RunSkipped)]
        assert child.runs == [] and skipped.slot == at(UTC, 2026, 6, 1, 2)
        assert f"pid {holder.pid}" in skipped.reason and "a night started by cron" in skipped.reason
        assert is_held(lock)
    finally:
        holder.kill()
        holder.wait()
    assert not is_held(lock)  # the kernel dropped it with its holder


def test_the_lock_is_exclusive_and_freed_on_exit(tmp_path):
    lock = tmp_path / "x.lock"
    with run_lock(lock, what="first"):
        assert is_held(lock)
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            with run_lock(lock, what="second"):
                pass
    assert not is_held(lock)


# ------------------------------------------------------------------ the child's command and budget


def test_each_command_gets_its_night_and_budget():
    slot = at(BERLIN, 2026, 11, 25, 2)
    assert run_arguments(["nightly", "--config", "n.yaml"], slot, 6 * 3600) == \
        ["nightly", "--config", "n.yaml", "--night", "2026-11-25", "--budget", "21600s"]
    assert run_arguments(["nightly", "--night", "2026-01-01"], slot, None) == ["nightly", "--night", "2026-01-01"]
    assert run_arguments(["run", "--study-name", "dino"], slot, 3600, "date") == \
        ["run", "--study-name", "dino-20261125", "--timeout", "3600"]
    assert run_arguments(["run", "--timeout", "10"], slot, 3600) == ["run", "--timeout", "10"]
    assert run_arguments(["run"], slot, None, "date")[-2:] == ["--study-name", "nightly-20261125"]
    assert hard_limit(["run"], 3600, 300) == 3600 and hard_limit(["nightly"], 3600, 300) == 3900
    assert hard_limit(["nightly"], None, 300) is None


def test_a_child_past_its_budget_is_stopped(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(60)\n")
    child = ChildProcess(grace_s=5, poll_s=0.1, program=(sys.executable, str(script)))
    started = time.monotonic()
    code, stopped = child([], 1.0)
    assert stopped and code != 0 and time.monotonic() - started < 10


def test_the_scheduler_runs_a_real_child(tmp_path):
    clock = FakeClock(at(UTC, 2026, 11, 25, 1, 0))
    events = []
    # `automl --help`: a real child process of the real CLI, exit code 0
    sched = Scheduler(CronSchedule.parse("0 2 * * *", "UTC"), ["--help"], ScheduleState(tmp_path / "s.json"),
                      tmp_path / "run.lock", clock=clock, emit=events.append)
    assert sched.run_forever(max_runs=1) == [0]
    assert sum(clock.slept) == pytest.approx(3600)
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished[0].exit_code == 0 and finished[0].slot == at(UTC, 2026, 11, 25, 2)


@pytest.mark.parametrize("argv, message", [
    (["schedule", "--cron", "0 2 * *", "--", "nightly", "--config", "n.yaml"], "5-field cron expression"),
    (["schedule", "--cron", "0 2 * * *", "--tz", "Berlin", "--", "nightly", "--config", "n.yaml"], "IANA"),
    (["schedule", "--daily-at", "02:00", "--budget", "six hours", "--", "nightly", "--config", "n.yaml"],
     "not a duration"),
    (["schedule", "--cron", "0 2 * * *", "--", "nightly", "--confgi", "n.yaml"], "is not valid"),
    (["schedule", "--cron", "0 2 * * *"], "after --"),
])
def test_bad_schedule_flags_fail_at_once(argv, message, capsys):
    assert automl_main(argv) == 2
    assert message in capsys.readouterr().err


def test_each_scheduler_event_is_one_line():
    from automl.ui.nightly import schedule_line

    slot = at(BERLIN, 2026, 11, 25, 2)
    assert schedule_line(NextRun(slot)) == "[schedule] next run at 2026-11-25 02:00 CET"
    line = schedule_line(RunStarting(slot, ("nightly", "--night", "2026-11-25"), late_s=6 * 3600))
    assert "6h late: catching up a missed run" in line and "automl nightly --night 2026-11-25" in line
    assert "overran its budget" in schedule_line(RunFinished(slot, 143, 21900, stopped=True))
    assert schedule_line(RunSkipped(slot, "why")).endswith("skipped: why")
