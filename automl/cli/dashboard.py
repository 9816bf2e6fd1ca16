"""``automl dashboard`` (optuna-dashboard on the study) and ``automl report`` (HTML report).

Both read an existing study storage, chosen as every command chooses it
(:mod:`automl.config.storage`): a missing SQLite file is refused rather than silently
created, so a mistyped ``--workspace`` is reported instead of showing an empty dashboard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sqlalchemy.exc

from automl.config.storage import DEFAULT_WORKSPACE, existing_storage_url, storage_error

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def _run_dashboard(args: argparse.Namespace) -> int:
    from automl.ui.dashboard import DashboardServer, capture_screenshot, is_loopback
    from automl.ui.report import resolve_study_name

    url = existing_storage_url(args.storage, args.workspace)
    host = args.host or DEFAULT_HOST
    shooting = args.screenshot is not None
    try:
        server = DashboardServer(
            url,
            host=host,
            port=0 if shooting else args.port,  # a screenshot must not clash with a live one
            artifact_dir=args.workspace / "artifacts",
            allow_remote=args.host is not None,  # only an explicit --host may leave loopback
        )
        if shooting:
            with server:
                name = resolve_study_name(url, args.study)
                path = capture_screenshot(server, name, args.screenshot)
            print(f"screenshot of study {name!r}: {path}")
            return 0
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_error(url, exc) from exc
    if not is_loopback(host):
        print(
            f"warning: serving on {host}: optuna-dashboard has no authentication; anyone who "
            "can reach this port can read and delete studies",
            file=sys.stderr,
        )
    print(f"optuna-dashboard: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from automl.ui.report import default_report_dir, resolve_study_name, write_report

    url = existing_storage_url(args.storage, args.workspace)
    try:
        name = resolve_study_name(url, args.study)
        out = args.out or default_report_dir(args.workspace, name)
        artifacts = args.workspace / "artifacts"
        path = write_report(url, name, out, artifacts if artifacts.is_dir() else None)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_error(url, exc) from exc
    print(f"report of study {name!r}: {path}")
    return 0


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="study storage URL (default: $AUTOML_STORAGE, else sqlite:///<workspace>/study.db)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=DEFAULT_WORKSPACE,
        metavar="DIR",
        help=f"workspace of `automl run` (default: ./{DEFAULT_WORKSPACE}); "
        "trial artifacts are read from <workspace>/artifacts",
    )


def register(sub: argparse._SubParsersAction) -> None:
    dash = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on the study (trials, curves, artifacts)",
        description="Serve optuna-dashboard on the study storage with the trials' artifacts "
        "(spec.yaml, log tail). Per-epoch values appear live while trials run.",
    )
    _add_storage_args(dash)
    dash.add_argument(
        "--host",
        help=f"address to bind (default: {DEFAULT_HOST}); a non-loopback address exposes an "
        "unauthenticated dashboard and must be given explicitly",
    )
    dash.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any)"
    )
    dash.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="instead of serving, save a screenshot of the study page (headless Chromium) and exit",
    )
    dash.add_argument(
        "--study", metavar="NAME", help="study to screenshot (default: the only one)"
    )
    dash.set_defaults(func=_run_dashboard)

    rep = sub.add_parser(
        "report",
        help="write an HTML report (figures, best trials, best spec) of a study",
        description="Write report.html and PNG figures for one study of the storage.",
    )
    _add_storage_args(rep)
    rep.add_argument(
        "--study", metavar="NAME", help="study name (default: the only study in the storage)"
    )
    rep.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: <workspace>/<study>/report, as `automl run` writes it)",
    )
    rep.set_defaults(func=_run_report)
