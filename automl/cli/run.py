"""``automl run``, ``automl status`` and ``automl best``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from rich.console import Console

from automl.config import build_run_config, read_config_file, read_profile
from automl.config.loader import deep_merge
from automl.config.storage import DEFAULT_WORKSPACE, existing_storage_url, redact_url, storage_error, storage_from_env
from automl.errors import ConfigError, UserError
from automl.study.attrs import STUDY_AGGREGATE, STUDY_METRIC, TrialAttrs
from automl.study.slots import detect_gpus


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run (or resume) a study", description=(
        "Run a study from a packaged profile or a config file. Running the same command "
        "again resumes the study: finished trials are kept, interrupted ones resume from "
        "their checkpoints."))
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", help="packaged profile, e.g. smoke")
    src.add_argument("--config", type=Path, help="run config YAML")
    run.add_argument("--study-name", help="study name (default from the config)")
    run.add_argument("--storage", help="RDB URL, e.g. postgresql://host/db (default $AUTOML_STORAGE, else sqlite in the workspace)")
    run.add_argument("--n-trials", type=int, help="finished trials the study should hold")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument("--devices", help="auto, cpu, or GPU indices like 0,1,2")
    run.add_argument("--workspace", type=Path, help="where trials, datasets and the report go")
    run.add_argument("--launcher", help="local or docker")
    run.add_argument("--train-data", help="training source: folder, archive or s3:// URI")
    run.add_argument("--val-data", help="validation source: folder, archive or s3:// URI")
    run.add_argument("--fixed", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a spec value for every trial (YAML value), e.g. train.num_epochs=20")
    run.add_argument("--seed", type=int, help="sampler seed")
    run.set_defaults(func=cmd_run)

    for name, func, helptext in (("status", cmd_status, "trials of a study in the storage"),
                                 ("best", cmd_best, "the best trial: value, params, spec, checkpoint")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--storage", help="RDB URL (default $AUTOML_STORAGE, else sqlite:///<workspace>/study.db)")
        p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
        p.add_argument("--study", help="study name (default: the only study in the storage)")
        if name == "best":
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)


def _parse_fixed(items: list[str]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--fixed expects KEY=VALUE, got {item!r}")
        fixed[key.strip()] = yaml.safe_load(value)
    return fixed


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if args.study_name:
        over.setdefault("study", {})["name"] = args.study_name
    storage = storage_from_env(args.storage)
    if storage:
        over.setdefault("study", {})["storage"] = storage
    if args.n_trials is not None:
        over.setdefault("budget", {})["n_trials"] = args.n_trials
    if args.timeout is not None:
        over.setdefault("budget", {})["timeout_s"] = args.timeout
    if args.seed is not None:
        over.setdefault("sampler", {})["seed"] = args.seed
    if args.workspace:
        over["workspace"] = str(args.workspace)
    if args.launcher:
        over.setdefault("launcher", {})["name"] = args.launcher
    if args.devices:
        if args.devices in ("auto", "cpu"):
            over["devices"] = args.devices
        else:
            try:
                over["devices"] = [int(d) for d in args.devices.split(",")]
            except ValueError:
                raise ConfigError(f"--devices must be auto, cpu or indices like 0,1; got {args.devices!r}") from None
    if args.train_data:
        over["data"] = {"train": args.train_data, "val": args.val_data, "synth": None}
    elif args.val_data:
        over["data"] = {"val": args.val_data}
    if args.fixed:
        over["fixed"] = _parse_fixed(args.fixed)
    return over


def load_config_from_args(args: argparse.Namespace, console: Console):
    raw = read_profile(args.profile) if args.profile else read_config_file(args.config)
    where = f"profile {args.profile}" if args.profile else str(args.config)
    raw = deep_merge(raw, _flag_overrides(args))
    devices = raw.get("devices", "auto")
    on_cpu = devices == "cpu" or (devices == "auto" and not detect_gpus())
    if on_cpu and raw.get("cpu"):
        console.print("[bold cyan]automl[/] no GPU in use: running the CPU-sized variant of "
                      f"{where} (its 'cpu:' block; see README)")
        # flags still win over the cpu block
        raw = deep_merge(deep_merge(raw, raw["cpu"]), _flag_overrides(args))
    return build_run_config(raw, use_cpu_variant=False, where=where)


def cmd_run(args: argparse.Namespace) -> int:
    from automl.study.runner import run_study
    from automl.ui.progress import ProgressBoard

    console = Console()
    if not console.is_terminal:  # logs and pipes: one event per line, no wrapping at 80
        console = Console(width=160)
    cfg = load_config_from_args(args, console)
    board = ProgressBoard(console, metric=cfg.metric.name,
                          maximize=cfg.metric.resolved_direction() == "maximize")
    outcome = run_study(cfg, board)
    return outcome.exit_code


def _open_study(args: argparse.Namespace) -> optuna.Study:
    url = existing_storage_url(args.storage, args.workspace)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_error(url, exc) from exc
    name = args.study
    if name is None:
        if len(names) != 1:
            raise UserError(f"the storage {redact_url(url)} holds {len(names)} studies; pick one with --study: "
                            f"{', '.join(names) or 'none'}")
        name = names[0]
    elif name not in names:
        raise UserError(f"no study {name!r} in {redact_url(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=url)


def cmd_status(args: argparse.Namespace) -> int:
    from automl.study.results import has_complete
    from automl.ui.tables import trials_table

    study = _open_study(args)
    console = Console()
    metric = study.user_attrs.get(STUDY_METRIC, "value")
    best = study.best_trial.number if has_complete(study) else None
    console.print(trials_table(study.study_name, study.get_trials(deepcopy=False), metric, best))
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    console.print(", ".join(f"{k.lower()}: {v}" for k, v in sorted(counts.items())))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from automl.study.best_checkpoint import checkpoint_for_value

    study = _open_study(args)
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {study.study_name!r} has no completed trial yet") from None
    recorded = TrialAttrs.of(best)
    choice = checkpoint_for_value(best, study.user_attrs.get(STUDY_AGGREGATE, "best"),
                                  study.user_attrs.get(STUDY_METRIC, ""))
    info = {
        "study": study.study_name, "trial": best.number, "value": best.value, "params": best.params,
        "spec": recorded.spec_path, "results_dir": recorded.results_dir,
        **choice.as_dict(),
    }
    if choice.note():
        info["checkpoint_note"] = choice.note()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:12s} {value}")
    return 0
