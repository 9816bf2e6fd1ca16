"""``automl`` command line: one module per command group, each with ``register``.

Each module exposes ``register(subparsers)`` which adds its sub-command(s) and sets
``func`` on the parser; ``func(args) -> int`` is the exit code. Errors a user can cause
are raised as :class:`automl.errors.UserError` and printed as one ``error:`` message
without a traceback (exit 2); so are the environment's refusals that reach this edge
(a folder that cannot be written, a full disk, a database that stops answering).
``--debug`` (or ``AUTOML_DEBUG=1``) prints the traceback as well. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

import sqlalchemy.exc

from automl.errors import UserError

# command modules, in the order they appear in --help
COMMAND_MODULES = (
    "automl.cli.run",  # run, status
    "automl.cli.best",  # best (and the hand-off of its model)
    "automl.cli.space",  # space show / sample
    "automl.cli.dataset",  # dataset synth / check / stage
    "automl.cli.dashboard",  # dashboard, report
    "automl.cli.schedule",  # a command on a cron schedule
    "automl.cli.nightly",  # one night of tuning, its history and page
)
DEBUG_ENV = "AUTOML_DEBUG"
# what the file system refuses for reasons a user can fix
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automl", description="Tune the DINO object detector with Optuna."
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an error too (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def as_user_error(exc: BaseException) -> UserError | None:
    """The message to print for ``exc``, or None when it is a bug (keep the traceback)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return UserError(f"{exc.strerror or exc}{where} (check the path, its permissions and the free space)")
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        return UserError(f"the study storage failed: {reason}; check that the database server is up and reachable")
    return None


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = as_user_error(exc)
        if error is None:
            raise
        if _debug(args):
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
