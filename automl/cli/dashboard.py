"""``automl dashboard`` (optuna-dashboard on the study) and ``automl report`` (HTML report,
with the best trial's detections drawn on validation images).

Both read an existing study storage, chosen as every command chooses it
(:mod:`automl.config.storage`): a missing SQLite file is refused rather than silently
created, so a mistyped ``--workspace`` is reported instead of showing an empty dashboard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy.exc

from automl.config.storage import DEFAULT_WORKSPACE, existing_storage_url, storage_error
from automl.errors import UserError

if TYPE_CHECKING:
    from automl.study.showcase import Showcase

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


def _report_pictures(url: str, name: str, out: Path, args: argparse.Namespace) -> Showcase | None:
    """The best trial's detections on validation images in ``out/predictions``: kept when
    they are of the best trial's checkpoint (and of the asked count and threshold), else
    drawn again through the study's launcher. None when the study has no completed trial."""
    import optuna

    from automl.cli.best import best_of_study, launcher_of_study, trainer_command_of_study
    from automl.study.showcase import DEFAULT_CONF_THRESHOLD, DEFAULT_IMAGES, FOLDER, Showcase, make_showcase

    study = optuna.load_study(study_name=name, storage=url)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    info, best = best_of_study(study, args.workspace)
    folder = Path(out) / FOLDER
    existing = Showcase.load(folder)
    if best is None:
        if existing is not None:
            return existing  # the report says whose pictures they are
        return Showcase(folder.resolve(), int(info["trial"]), str(info["checkpoint"]),
                        args.conf_threshold or DEFAULT_CONF_THRESHOLD, args.predictions or DEFAULT_IMAGES,
                        problem=f"trial {info['trial']}'s spec or checkpoint is no longer on this machine "
                                f"(results dir {info['results_dir']})")
    if existing is not None and existing.matches(best.number, best.checkpoint, args.predictions, args.conf_threshold):
        return existing
    images = args.predictions or (existing.requested if existing else DEFAULT_IMAGES)
    threshold = args.conf_threshold if args.conf_threshold is not None else (
        existing.conf_threshold if existing else DEFAULT_CONF_THRESHOLD)
    try:
        launcher = launcher_of_study(study, args.workspace, None)
    except Exception as exc:  # e.g. no Docker engine here: the report is still written, and says why
        return Showcase(folder.resolve(), best.number, str(best.checkpoint), threshold, images,
                        problem=f"the study's launcher cannot start here ({type(exc).__name__}: {exc})")
    print(f"drawing trial {best.number}'s detections on {images} validation images "
          f"(dino inference, launcher {launcher.name})", file=sys.stderr, flush=True)
    return make_showcase(study_name=name, trial=best.number, spec=best.spec, checkpoint=best.checkpoint,
                         launcher=launcher, train_command=trainer_command_of_study(study, launcher.name),
                         folder=folder, images=images, conf_threshold=threshold, reuse=False)


def _run_report(args: argparse.Namespace) -> int:
    from automl.ui.report import default_report_dir, resolve_study_name, write_report

    if args.predictions is not None and not 0 <= args.predictions <= 32:
        raise UserError(f"--predictions {args.predictions}: give 0 (no pictures) to 32 images")
    if args.conf_threshold is not None and not 0.0 <= args.conf_threshold <= 1.0:
        raise UserError(f"--conf-threshold {args.conf_threshold}: must be in [0, 1]")
    url = existing_storage_url(args.storage, args.workspace)
    try:
        name = resolve_study_name(url, args.study)
        out = args.out or default_report_dir(args.workspace, name)
        pictures = None if args.predictions == 0 else _report_pictures(url, name, out, args)
        artifacts = args.workspace / "artifacts"
        path = write_report(url, name, out, artifacts if artifacts.is_dir() else None)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_error(url, exc) from exc
    print(f"report of study {name!r}: {path}")
    if pictures is not None and pictures.ok:
        print(f"pictures: {pictures.folder} ({len(pictures.pictures)} validation images, ground truth beside "
              f"trial {pictures.trial}'s detections with score >= {pictures.conf_threshold:.2f})")
    elif pictures is not None:
        print(f"no pictures: {pictures.problem}")
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
    rep.add_argument(
        "--predictions", type=int, metavar="N",
        help="validation images on which the best trial's detections are drawn beside the ground truth "
        "(default: as the run drew them, else 4; 0: draw none). Pictures of the best checkpoint already "
        "there are kept; otherwise dino inference runs through the study's launcher",
    )
    rep.add_argument(
        "--conf-threshold", type=float, metavar="SCORE",
        help="draw detections scoring at least this (default: as the run drew them, else 0.3)",
    )
    rep.set_defaults(func=_run_report)
