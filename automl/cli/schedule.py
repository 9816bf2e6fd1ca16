"""``automl schedule``: nightly tuning."""

from __future__ import annotations

import argparse

from automl.errors import ConfigError
from automl.study.schedule import NightlyScheduler, parse_daily_at


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schedule", help="run an automl command every day at a fixed time",
                       description="Example: automl schedule --daily-at 02:00 -- run --config study.yaml")
    p.add_argument("--daily-at", required=True, help="local time HH:MM")
    p.add_argument("--study-suffix", choices=["date"], help="give each night its own study, <name>-YYYYMMDD")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (default: forever)")
    p.add_argument("automl_args", nargs=argparse.REMAINDER, help="-- then the automl command to run")
    p.set_defaults(func=cmd_schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    try:
        at = parse_daily_at(args.daily_at)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rest = [a for a in args.automl_args if a != "--"] if args.automl_args[:1] == ["--"] else args.automl_args
    if not rest:
        raise ConfigError("give the command to schedule after --, e.g. -- run --config study.yaml")
    scheduler = NightlyScheduler(at, rest, study_suffix=args.study_suffix, log=lambda line: print(line, flush=True))
    codes = scheduler.run_forever(max_runs=args.max_runs)
    return 0 if all(c == 0 for c in codes) else 1
