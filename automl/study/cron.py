"""When nightly runs are due: a cron expression in a time zone.

The arithmetic comes from ``croniter`` rather than APScheduler: we need exactly one
thing, "the next (or latest) fire time of this expression after that instant", as a pure
function our own loop calls with its own clock, so tests drive it with a fake one and the
missed-run rule stays ours. APScheduler is a whole in-process scheduler (job stores,
executors, threads) whose ``CronTrigger`` would be the only part used; croniter is that
part alone, small, pure Python and maintained (pallets-eco).

Daylight-saving changes, as Vixie cron handles them for jobs at a fixed time:

- a wall-clock time skipped by the spring change (02:30 in Europe/Berlin on the last
  Sunday of March) fires once, at the first instant after the gap (03:00);
- a wall-clock time repeated by the autumn change fires once, at its first occurrence
  (summer time); croniter yields both, the second is dropped here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from croniter import croniter

from automl.config.nightly import zone_info

UTC = dt.UTC
_MAX_STEPS = 10_000  # far more candidates than any expression needs between two real fire times


def parse_daily_at(text: str) -> dt.time:
    try:
        return dt.datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise ValueError(f"--daily-at expects HH:MM (24 h), got {text!r}") from None


def _repeated(local: dt.datetime) -> bool:
    """True for the second occurrence of a wall-clock time the autumn change repeats."""
    if local.fold != 1:
        return False
    return local.replace(fold=0).utcoffset() != local.utcoffset()


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    """``expression`` (5 fields, as in crontab) evaluated in ``tz``.

    Instants passed in and returned are timezone-aware; returned ones are in ``tz``.
    """

    expression: str
    tz: dt.tzinfo
    tz_name: str = "local"

    @classmethod
    def parse(cls, expression: str, tz_name: str | None = None) -> CronSchedule:
        """ValueError saying what is wrong with the expression or the zone."""
        fields = expression.split()
        if len(fields) != 5 or not croniter.is_valid(expression):
            raise ValueError(
                f"--cron {expression!r} is not a 5-field cron expression (minute hour day-of-month month "
                "day-of-week), e.g. '0 2 * * *' for 02:00 daily or '30 1 * * 1-5' for 01:30 on weekdays")
        return cls(" ".join(fields), zone_info(tz_name), tz_name or "local")

    @classmethod
    def daily_at(cls, at: dt.time, tz_name: str | None = None) -> CronSchedule:
        """``--daily-at HH:MM``: the shorthand of ``M H * * *``."""
        return cls.parse(f"{at.minute} {at.hour} * * *", tz_name)

    def describe(self) -> str:
        return f"'{self.expression}' ({self.tz_name})"

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``moment``."""
        start = moment.astimezone(self.tz)
        it = croniter(self.expression, start)
        for _ in range(_MAX_STEPS):
            candidate = it.get_next(dt.datetime).astimezone(self.tz)
            if candidate.astimezone(UTC) > moment.astimezone(UTC) and not _repeated(candidate):
                return candidate
        raise RuntimeError(f"no fire time of {self.describe()} after {moment.isoformat()}")

    def latest_at_or_before(self, moment: dt.datetime) -> dt.datetime:
        """The most recent fire time at or before ``moment`` (a missed run's slot)."""
        start = moment.astimezone(self.tz) + dt.timedelta(seconds=1)
        it = croniter(self.expression, start)
        for _ in range(_MAX_STEPS):
            candidate = it.get_prev(dt.datetime).astimezone(self.tz)
            if candidate.astimezone(UTC) <= moment.astimezone(UTC) and not _repeated(candidate):
                return candidate
        raise RuntimeError(f"no fire time of {self.describe()} before {moment.isoformat()}")
