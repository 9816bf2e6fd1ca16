"""``automl nightly``: one night's work (what cron, a systemd timer or a Kubernetes CronJob
calls), ``automl nightly history`` (the nights as a table) and ``automl nightly report``
(the page of the champion's metric across nights)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console

from automl.config import read_config_file, read_profile
from automl.config.durations import parse_duration
from automl.config.nightly import NightlyConfig, build_nightly_config
from automl.config.storage import DEFAULT_WORKSPACE, storage_from_env
from automl.errors import ConfigError, UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nightly", help="one night of tuning that improves a champion; history; report",
        description=("Stage the newest data, tune tonight's study (<study.name>-YYYYMMDD) warm-started from the "
                     "previous nights within the budget, score its best and the champion on the fixed held-out "
                     "set, promote only a real win. Example: automl nightly --config nightly.yaml"))
    _add_source(p, required=False)
    p.add_argument("--night", help="the night's date YYYY-MM-DD (default: today in nightly.timezone)")
    p.add_argument("--budget", help="wall clock of the night, e.g. 6h or 90m (overrides nightly.budget)")
    p.add_argument("--force", action="store_true", help="run a night that is done already again")
    p.add_argument("--storage", help="RDB URL (default $AUTOML_STORAGE, else the config's)")
    p.add_argument("--workspace", type=Path, help="workspace (overrides the config's)")
    p.add_argument("--devices", help="auto, cpu, or GPU indices like 0,1")
    p.add_argument("--launcher", help="local or docker")
    p.set_defaults(func=cmd_nightly)
    actions = p.add_subparsers(dest="nightly_action", metavar="ACTION")
    for name, func, helptext in (("history", cmd_history, "the nights as a table"),
                                 ("report", cmd_report, "write the page of the champion's metric across nights")):
        a = actions.add_parser(name, help=helptext)
        _add_source(a, required=False)
        a.add_argument("--workspace", type=Path, help="workspace holding nightly/<study>/runs.jsonl")
        a.add_argument("--study", help="the nightly's base study name (default: the only one in the workspace)")
        a.set_defaults(func=func)


def _add_source(p: argparse.ArgumentParser, required: bool) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--config", type=Path, help="nightly config YAML (a run config plus a nightly: block)")
    src.add_argument("--profile", help="packaged profile, e.g. smoke (nightly settings at their defaults)")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    storage = storage_from_env(getattr(args, "storage", None))
    if storage:
        over.setdefault("study", {})["storage"] = storage
    if getattr(args, "workspace", None):
        over["workspace"] = str(args.workspace)
    if getattr(args, "launcher", None):
        over.setdefault("launcher", {})["name"] = args.launcher
    devices = getattr(args, "devices", None)
    if devices:
        if devices in ("auto", "cpu"):
            over["devices"] = devices
        else:
            try:
                over["devices"] = [int(d) for d in devices.split(",")]
            except ValueError:
                raise ConfigError(f"--devices must be auto, cpu or indices like 0,1; got {devices!r}") from None
    return over


def load_nightly_config(args: argparse.Namespace, console: Console) -> NightlyConfig:
    from automl.cli.run import config_from_raw

    if args.config is None and args.profile is None:
        raise ConfigError("give the nightly config: automl nightly --config nightly.yaml (or --profile smoke)")
    raw = read_profile(args.profile) if args.profile else read_config_file(args.config)
    where = f"profile {args.profile}" if args.profile else str(args.config)
    flags = _flags(args)
    return build_nightly_config(raw, lambda rest: config_from_raw(rest, flags, where, console), where)


def cmd_nightly(args: argparse.Namespace) -> int:
    from automl.study.nightly import run_night
    from automl.ui.nightly import night_summary
    from automl.ui.progress import ProgressBoard

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    cfg = load_nightly_config(args, console)
    try:
        night = dt.date.fromisoformat(args.night) if args.night else None
    except ValueError:
        raise ConfigError(f"--night expects a date YYYY-MM-DD, got {args.night!r}") from None
    try:
        budget = parse_duration(args.budget, "--budget") if args.budget else None
        cfg.nightly.resolved_reserve(budget if budget is not None else cfg.nightly.budget)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    board = ProgressBoard(console, metric=cfg.run.metric.name, maximize=cfg.maximize)
    record = run_night(cfg, board, night=night, budget_s=budget, force=args.force)
    console.print(night_summary(record), markup=False, highlight=False)
    return {"done": 0, "skipped": 0, "interrupted": 130}.get(record.status, 1)


def _record_path(args: argparse.Namespace) -> tuple[Path, Path, str, str | None]:
    """(runs.jsonl, night.lock, base name, champion metric) from --config or --workspace/--study."""
    if args.config is not None or args.profile is not None:
        cfg = load_nightly_config(args, Console(stderr=True))
        return cfg.record_path, cfg.lock_path, cfg.base_name, cfg.champion_metric
    root = (args.workspace or DEFAULT_WORKSPACE) / "nightly"
    bases = sorted(p.parent.name for p in root.glob("*/runs.jsonl"))
    if args.study is not None:
        if args.study not in bases:
            raise UserError(f"no nightly record for study {args.study!r} in {root} (found: {', '.join(bases) or 'none'})")
        base = args.study
    elif len(bases) == 1:
        base = bases[0]
    else:
        raise UserError(f"{len(bases)} nightly records in {root}: {', '.join(bases) or 'none'}; "
                        "pick one with --study, or pass --config" if bases else
                        f"no nightly record in {root}: run `automl nightly --config nightly.yaml` first, "
                        "or pass --workspace / --config")
    return root / base / "runs.jsonl", root / base / "night.lock", base, None


def cmd_history(args: argparse.Namespace) -> int:
    from automl.study.night_record import read_records
    from automl.study.run_lock import is_held
    from automl.ui.nightly import history_table

    path, lock, base, metric = _record_path(args)
    records = read_records(path)
    if not records:
        raise UserError(f"no night recorded in {path} yet")
    live: set[str] = set()
    running = [r for r in records if r.status == "running"]
    if running and is_held(lock):
        live.add(running[-1].run_id)
    metric = metric or next((r.evaluation.metric for r in reversed(records) if r.evaluation.metric), "held-out")
    Console(width=200).print(history_table(records, live, metric))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from automl.study.night_record import read_records
    from automl.ui.report import write_nightly_page

    path, _, base, metric = _record_path(args)
    records = read_records(path)
    metric = metric or next((r.evaluation.metric for r in reversed(records) if r.evaluation.metric), "held-out")
    page = write_nightly_page(records, path.parent / "report", base, metric)
    print(f"nightly page of {base!r}: {page}")
    return 0
