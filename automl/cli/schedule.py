"""``automl schedule``: a long-lived process running an automl command on a cron schedule."""

from __future__ import annotations

import argparse
from pathlib import Path

from automl.config.durations import parse_duration
from automl.config.storage import DEFAULT_WORKSPACE
from automl.errors import ConfigError
from automl.study.cron import CronSchedule, parse_daily_at
from automl.study.schedule import DEFAULT_CATCH_UP_S, DEFAULT_STOP_GRACE_S, Scheduler, ScheduleState


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule", help="run an automl command on a cron schedule (a long-lived process)",
        description=('Example: automl schedule --cron "0 2 * * *" --tz Europe/Berlin --budget 6h -- '
                     "nightly --config nightly.yaml"))
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5-field cron expression, e.g. '0 2 * * *'")
    when.add_argument("--daily-at", help="HH:MM: shorthand of --cron 'M H * * *'")
    p.add_argument("--tz", help="IANA time zone of the schedule, e.g. Europe/Berlin (default: the machine's)")
    p.add_argument("--budget", help="wall clock of each run, e.g. 6h: passed on (nightly --budget, "
                                    "run --timeout) and enforced (SIGTERM, then SIGKILL)")
    p.add_argument("--catch-up", default=f"{DEFAULT_CATCH_UP_S:.0f}s",
                   help="a slot missed by at most this (machine off, a run overran) runs once, late (default 12h)")
    p.add_argument("--stop-grace", default=f"{DEFAULT_STOP_GRACE_S:.0f}s",
                   help="after SIGTERM, how long a run may take to stop before SIGKILL (default 5m)")
    p.add_argument("--study-suffix", choices=["date"], help="for `run`: give each night its own study, <name>-YYYYMMDD")
    p.add_argument("--workspace", type=Path,
                   help="where the schedule's state and lock live (default: the command's --workspace, "
                        f"else {DEFAULT_WORKSPACE})")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (default: forever)")
    p.add_argument("automl_args", nargs=argparse.REMAINDER, help="-- then the automl command to run")
    p.set_defaults(func=cmd_schedule)


def _workspace(args: argparse.Namespace, rest: list[str]) -> Path:
    if args.workspace is not None:
        return Path(args.workspace)
    for i, arg in enumerate(rest):
        if arg == "--workspace" and i + 1 < len(rest):
            return Path(rest[i + 1])
        if arg.startswith("--workspace="):
            return Path(arg.split("=", 1)[1])
    return DEFAULT_WORKSPACE


def cmd_schedule(args: argparse.Namespace) -> int:
    from automl.cli import build_parser
    from automl.ui.nightly import schedule_line

    rest = args.automl_args[1:] if args.automl_args[:1] == ["--"] else list(args.automl_args)
    if not rest:
        raise ConfigError("give the command to schedule after --, e.g. -- nightly --config nightly.yaml")
    if rest[0] == "schedule":
        raise ConfigError("the scheduled command cannot be `schedule` itself")
    try:
        build_parser().parse_args(rest)  # a typo fails now, not at 02:00
    except SystemExit:
        raise ConfigError(f"the scheduled command `automl {' '.join(rest)}` is not valid (usage above)") from None
    try:
        schedule = (CronSchedule.parse(args.cron, args.tz) if args.cron
                    else CronSchedule.daily_at(parse_daily_at(args.daily_at), args.tz))
        budget = parse_duration(args.budget, "--budget") if args.budget else None
        catch_up = parse_duration(args.catch_up, "--catch-up")
        grace = parse_duration(args.stop_grace, "--stop-grace")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    state_dir = _workspace(args, rest) / "schedule"
    scheduler = Scheduler(
        schedule, rest, ScheduleState(state_dir / "state.json"), state_dir / "run.lock",
        budget_s=budget, catch_up_s=catch_up, stop_grace_s=grace, study_suffix=args.study_suffix,
        emit=lambda event: print(schedule_line(event), flush=True),
    )
    print(f"[schedule] {schedule.describe()}; state in {state_dir}", flush=True)
    codes = scheduler.run_forever(max_runs=args.max_runs)
    return 0 if all(c == 0 for c in codes) else 1
