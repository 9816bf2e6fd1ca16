"""``automl run``, ``automl status`` and ``automl best``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from rich.console import Console
from rich.text import Text

from automl.config import build_run_config, read_config_file, read_profile
from automl.config.loader import deep_merge
from automl.config.storage import (
    DEFAULT_WORKSPACE,
    existing_storage_url,
    parse_storage_url,
    prepare_workspace,
    redact_url,
    storage_error,
    storage_from_env,
    storage_source,
)
from automl.errors import ConfigError, UserError
from automl.study.attrs import STUDY_METRIC
from automl.study.slots import detect_gpus
from dino.config.yaml_values import load_yaml


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
    run.add_argument("--trials-per-slot", help="trials sharing one device slot at once: a number or auto "
                                                 "(from the first trial's measured GPU memory)")
    run.add_argument("--workspace", type=Path, help="where trials, datasets and the report go")
    run.add_argument("--launcher", help="local or docker")
    run.add_argument("--train-data", help="training source: folder, archive or s3:// URI")
    run.add_argument("--val-data", help="validation source: folder, archive or s3:// URI")
    run.add_argument("--fixed", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a spec value for every trial (YAML value), e.g. train.num_epochs=20")
    run.add_argument("--seed", type=int, help="sampler seed")
    run.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="trials of a study in the storage")
    add_study_arguments(p)
    p.set_defaults(func=cmd_status)


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """``--storage``, ``--workspace`` and ``--study``: which study a command reads."""
    p.add_argument("--storage", help="RDB URL (default $AUTOML_STORAGE, else sqlite:///<workspace>/study.db)")
    p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
    p.add_argument("--study", help="study name (default: the only study in the storage)")


def _parse_fixed(items: list[str]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--fixed expects KEY=VALUE, got {item!r}")
        fixed[key.strip()] = load_yaml(value)
    return fixed


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if args.study_name:
        over.setdefault("study", {})["name"] = args.study_name
    storage = storage_from_env(args.storage)
    if storage:  # checked here too, so the message names the flag or variable it came from
        over.setdefault("study", {})["storage"] = parse_storage_url(storage, storage_source(args.storage))
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
            over["devices"] = {"use": args.devices}
        else:
            try:
                over["devices"] = {"use": [int(d) for d in args.devices.split(",")]}
            except ValueError:
                raise ConfigError(f"--devices must be auto, cpu or indices like 0,1; got {args.devices!r}") from None
    if getattr(args, "trials_per_slot", None):
        value = args.trials_per_slot
        if value != "auto" and not value.isdigit():
            raise ConfigError(f"--trials-per-slot must be a number or auto; got {value!r}")
        over.setdefault("devices", {})["trials_per_slot"] = value if value == "auto" else int(value)
    if args.train_data:
        over["data"] = {"train": args.train_data, "val": args.val_data, "synth": None}
    elif args.val_data:
        over["data"] = {"val": args.val_data}
    if args.fixed:
        over["fixed"] = _parse_fixed(args.fixed)
    return over


def _devices_as_mapping(raw: dict[str, Any]) -> dict[str, Any]:
    """``devices: cpu`` (or a list) as ``{use: cpu}``, in the config and its cpu block."""
    out = dict(raw)
    if isinstance(out.get("devices"), (str, list)):
        out["devices"] = {"use": out["devices"]}
    if isinstance(out.get("cpu"), dict):
        out["cpu"] = _devices_as_mapping(out["cpu"])
    return out


def load_config_from_args(args: argparse.Namespace, console: Console):
    raw = read_profile(args.profile) if args.profile else read_config_file(args.config)
    where = f"profile {args.profile}" if args.profile else str(args.config)
    raw = _devices_as_mapping(raw)  # so that --trials-per-slot keeps a file's device list
    return config_from_raw(raw, _flag_overrides(args), where, console)


def config_from_raw(raw: dict[str, Any], flags: dict[str, Any], where: str, console: Console):
    """The RunConfig of ``raw`` with ``flags`` applied, CPU variant merged when no GPU is in use."""
    raw = deep_merge(raw, flags)
    devices = raw.get("devices", "auto")
    use = devices.get("use", "auto") if isinstance(devices, dict) else devices
    on_cpu = use == "cpu" or (use == "auto" and not detect_gpus())
    if on_cpu and raw.get("cpu"):
        console.print(Text.assemble(("automl", "bold cyan"), " no GPU in use: running the CPU-sized variant of "
                                    f"{where} (its 'cpu:' block; see README)"), soft_wrap=True)
        # flags still win over the cpu block
        raw = deep_merge(deep_merge(raw, raw["cpu"]), flags)
    return build_run_config(raw, use_cpu_variant=False, where=where)


def cmd_run(args: argparse.Namespace) -> int:
    from automl.study.runner import run_study
    from automl.ui.progress import ProgressBoard

    console = Console()
    if not console.is_terminal:  # logs and pipes: one event per line, no wrapping at 80
        console = Console(width=160)
    cfg = load_config_from_args(args, console)
    prepare_workspace(cfg.workspace, "--workspace" if args.workspace else "workspace")
    board = ProgressBoard(console, metric=cfg.metric.name,
                          maximize=cfg.metric.resolved_direction() == "maximize")
    try:
        outcome = run_study(cfg, board)
    except sqlalchemy.exc.OperationalError as exc:  # the database went away (or never answered)
        raise storage_error(cfg.storage_url, exc) from exc
    return outcome.exit_code


def open_study_of(args: argparse.Namespace) -> optuna.Study:
    url = existing_storage_url(args.storage, args.workspace)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_error(url, exc) from exc
    name = args.study
    if not names:
        raise UserError(f"the storage {redact_url(url)} holds no study yet: `automl run` creates one there")
    if name is None:
        if len(names) != 1:
            raise UserError(f"the storage {redact_url(url)} holds {len(names)} studies; pick one with --study: "
                            f"{', '.join(names) or 'none'}")
        name = names[0]
    elif name not in names:
        raise UserError(f"no study {name!r} in {redact_url(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=url)


def cmd_status(args: argparse.Namespace) -> int:
    from automl.study.results import best_own_trial
    from automl.ui.tables import trials_table

    study = open_study_of(args)
    console = Console()
    metric = study.user_attrs.get(STUDY_METRIC, "value")
    best_trial = best_own_trial(study)
    best = best_trial.number if best_trial is not None else None
    console.print(trials_table(study.study_name, study.get_trials(deepcopy=False), metric, best))
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    console.print(Text(", ".join(f"{k.lower()}: {v}" for k, v in sorted(counts.items()))))
    return 0
