"""``automl space show`` / ``automl space sample``: look at the search space before a run.

Defaults: the bundled DINO schema (``search_spaces/dino/train.schema.json``, found next to
the ``automl`` package or through ``AUTOML_SEARCH_SPACES``) and, with it, the curated
``search_spaces/dino/default_space.yaml``. With another ``--schema`` and no ``--space``
the space comes from that schema alone; ``--space schema`` asks for that explicitly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import optuna
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from automl.errors import ConfigError
from automl.search_space import (
    SearchSpace,
    TrainSchema,
    default_schema_path,
    default_space_path,
    default_template_path,
    load_space_overrides,
    load_spec_template,
)
from dino.config.yaml_values import load_yaml

COLUMNS = ("parameter", "type", "range", "scale", "condition", "source")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("space", help="show or sample the search space")
    commands = parser.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    commands.required = True

    show = commands.add_parser("show", help="list the parameters a trial samples, with ranges and rules")
    _common(show)
    show.set_defaults(func=_show)

    sample = commands.add_parser("sample", help="draw parameter sets with Optuna's random sampler")
    _common(sample)
    sample.add_argument("-n", "--num", type=int, default=5, help="how many sets (default 5)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--json", action="store_true", help="print a JSON list of {dotted.path: value}")
    sample.set_defaults(func=_sample)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", metavar="PATH", help="TAO-format train schema (default: bundled DINO)")
    parser.add_argument(
        "--space", metavar="FILE",
        help="space file (default: the curated DINO space with the default schema; "
        "'schema': derive from the schema alone)",
    )  # fmt: skip
    parser.add_argument(
        "--template", metavar="PATH",
        help="spec template whose values constraints read for parents not sampled "
        "(default: the bundled DINO template with the default schema)",
    )  # fmt: skip
    parser.add_argument(
        "--context", metavar="KEY=VALUE", action="append", default=[],
        help="a value fixed by the run that constraints need, e.g. dataset.num_classes=5 (repeatable)",
    )  # fmt: skip


def build_space(args: argparse.Namespace) -> tuple[SearchSpace, str, str]:
    schema_path = args.schema or default_schema_path()
    if args.space == "schema":
        space_path = None
    elif args.space is not None:
        space_path = args.space
    else:
        space_path = None if args.schema else default_space_path()
    template_path = args.template or (None if args.schema else default_template_path())
    schema = TrainSchema.load(schema_path)
    space = SearchSpace.build(
        schema,
        load_space_overrides(space_path),
        context=_context(args.context),
        template=load_spec_template(template_path) if template_path else None,
    )
    for line in space.warnings:  # once each: what the schema holds that is left out
        print(f"warning: {line}", file=sys.stderr)
    return space, str(schema_path), str(space_path) if space_path else "(derived from the schema)"


def _context(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--context {item!r}: expected KEY=VALUE, e.g. dataset.num_classes=5")
        try:
            out[key.strip()] = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--context {item!r}: the value is not valid YAML ({exc})") from None
    return out


def _console() -> Console:
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)


def _show(args: argparse.Namespace) -> int:
    space, schema_path, space_path = build_space(args)
    console = _console()
    table = Table(title=f"Search space: {len(space)} parameters", title_justify="left")
    for name in COLUMNS:
        table.add_column(name.capitalize(), no_wrap=name == "parameter", overflow="fold")
    for row in space.describe():
        table.add_row(*(Text(row[c]) for c in COLUMNS))
    console.print(f"schema: {schema_path}\nspace:  {space_path}", markup=False, highlight=False)
    if space.context:
        context = ", ".join(f"{k}={v}" for k, v in space.context.items())
        console.print(f"context: {context}", markup=False, highlight=False)
    console.print(table)
    if space.excluded:
        excluded = Table(title="Not tuned", title_justify="left")
        excluded.add_column("Parameter", no_wrap=True)
        excluded.add_column("Why", overflow="fold")
        for path, why in space.excluded.items():
            excluded.add_row(Text(path), Text(why))
        console.print(excluded)
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num}")
    space, _, _ = build_space(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    sets = []
    for _ in range(args.num):
        trial = study.ask()
        sets.append(space.suggest(trial))
        study.tell(trial, 0.0)
    if args.json:
        print(json.dumps(sets, indent=2))
        return 0
    table = Table(title=f"{args.num} random parameter sets (seed {args.seed})", title_justify="left")
    table.add_column("Parameter", no_wrap=True)
    for i in range(args.num):
        table.add_column(f"#{i}", overflow="fold")
    for path in space.paths:
        table.add_row(Text(path), *(Text(_short(s[path])) for s in sets))
    _console().print(table)
    return 0


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
