"""``automl`` command line: one module per command group, each with ``register``.

Each module exposes ``register(subparsers)`` which adds its sub-command(s) and sets
``func`` on the parser; ``func(args) -> int`` is the exit code. Errors a user can cause
are raised as :class:`automl.errors.UserError` and printed without a traceback (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from automl.errors import UserError

# command modules, in the order they appear in --help
COMMAND_MODULES = (
    "automl.cli.run",  # run, status, best
    "automl.cli.space",  # space show / sample
    "automl.cli.dataset",  # dataset synth / check / stage
    "automl.cli.dashboard",  # dashboard, report
    "automl.cli.schedule",  # a command on a cron schedule
    "automl.cli.nightly",  # one night of tuning, its history and page
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automl", description="Tune the DINO object detector with Optuna."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
