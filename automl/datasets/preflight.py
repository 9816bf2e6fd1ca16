"""Preflight: catch what would crash or waste a training job before any GPU time.

Each check mirrors a known DINO/TAO failure: ``num_classes < max(category_id) + 1`` is a
CUDA device-side assert mid-epoch; a dataset smaller than ``batch_size * num_gpus`` gives
zero batches. The spec's cross-field rules (``num_select``, feature levels, ``gpu_ids``)
are the trainer's own, read from :mod:`dino.config.rules`. Data checks open the files the
trainer will open: every image is looked up and its header read, and all of them (small
sets) or a seeded sample (large sets) are decoded with PIL. Boxes and image sizes go
through the trainer's own data policy (:mod:`dino.data.policy`): what it fixes is a
warning, what it refuses an error, so preflight passes exactly the data training accepts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from automl.datasets.coco import CocoSet, read_coco
from automl.datasets.findings import Finding, FindingGroup, Severity
from automl.datasets.staging import StagedSplit
from automl.errors import ConfigError
from dino.config.rules import check_rules
from dino.data.policy import BoxEntry, ImageEntry, ImageProbe, apply_policy, probe_images


@dataclass(frozen=True)
class SpecFacts:
    """The few spec values preflight checks; None means "unknown, skip that check"."""

    num_classes: int | None = None  # dataset.num_classes
    batch_size: int | None = None  # dataset.batch_size
    num_gpus: int | None = None  # train.num_gpus
    gpu_ids: tuple[int, ...] | None = None  # train.gpu_ids
    num_queries: int | None = None  # model.num_queries
    num_select: int | None = None  # model.num_select
    num_feature_levels: int | None = None  # model.num_feature_levels
    return_interm_indices: tuple[int, ...] | None = None  # model.return_interm_indices

    SPEC_KEYS = {
        "num_classes": "dataset.num_classes",
        "batch_size": "dataset.batch_size",
        "num_gpus": "train.num_gpus",
        "gpu_ids": "train.gpu_ids",
        "num_queries": "model.num_queries",
        "num_select": "model.num_select",
        "num_feature_levels": "model.num_feature_levels",
        "return_interm_indices": "model.return_interm_indices",
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("gpu_ids", "return_interm_indices"):
                if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(_is_int(v) for v in value):
                    raise ConfigError(f"{self.SPEC_KEYS[f.name]} must be a list of integers, got {value!r}")
                object.__setattr__(self, f.name, tuple(value))
            elif not _is_int(value):
                raise ConfigError(f"{self.SPEC_KEYS[f.name]} must be an integer, got {value!r}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SpecFacts:
        """Read the values from a TAO DINO train spec (nested dict); absent keys stay None."""
        values: dict[str, Any] = {}
        for name, dotted in cls.SPEC_KEYS.items():
            node: Any = spec
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            values[name] = node
        return cls(**values)

    def lookup(self, dotted: str) -> Any:
        """The value of spec field ``dotted`` (None when unknown), as :mod:`dino.config.rules` reads it."""
        for name, key in self.SPEC_KEYS.items():
            if key == dotted:
                value = getattr(self, name)
                return list(value) if isinstance(value, tuple) else value
        return None

    def replace(self, **overrides: Any) -> SpecFacts:
        """A copy with the non-None ``overrides`` applied (CLI flags over a spec file)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update({k: v for k, v in overrides.items() if v is not None})
        return SpecFacts(**current)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- spec


def check_spec(facts: SpecFacts) -> list[Finding]:
    """Checks of the spec alone (no data needed): positive counts, then the cross-field
    rules the trainer applies too (:mod:`dino.config.rules`), with their severity."""
    out: list[Finding] = []
    keys = SpecFacts.SPEC_KEYS
    for name in ("batch_size", "num_gpus", "num_queries", "num_classes", "num_feature_levels"):
        value = getattr(facts, name)
        if value is not None and value < 1:
            out.append(Finding(Severity.ERROR, f"{keys[name]} is {value}; it must be at least 1", keys[name], f"set {keys[name]} to a positive integer", code="spec_value_invalid"))
    for v in check_rules(facts.lookup):
        out.append(Finding(Severity(v.severity.value), v.message, " / ".join(v.fields), v.fix,
                           suggested_value=v.suggested_value, setting=v.setting, code=v.code))
    return out


# ----------------------------------------------------------------------------- data


# progress(split, images read, images in the split), for long header scans
ProgressFn = Callable[[str, int, int], None]


def _check_images(split: str, staged: StagedSplit, coco: CocoSet, sample_limit: int,
                  progress: ProgressFn | None = None) -> tuple[list[Finding], dict[int, ImageProbe]]:
    """Every listed file is looked up and its header read (size, EXIF orientation: what the
    data policy needs); all pixels of small sets, a seeded sample of large ones, are decoded."""
    where = f"{split} {staged.image_dir}"
    missing = FindingGroup("image_missing", Severity.ERROR, "image files listed in the annotations are missing", where, "add the files, or remove their entries (and annotations) from the annotations file")
    unreadable = FindingGroup("image_unreadable", Severity.ERROR, "image files cannot be decoded", where, "replace the corrupt files or remove their entries")
    report = None if progress is None else (lambda done, total: progress(split, done, total))
    probed = probe_images({img.id: str(staged.image_dir / img.file_name) for img in coco.images}, progress=report)
    for _, path in probed.missing:
        missing.add(repr(Path(path).relative_to(staged.image_dir).as_posix()))
    for _, path, why in probed.unreadable:
        unreadable.add(f"{Path(path).relative_to(staged.image_dir).as_posix()!r} ({why})"[:160])
    present = [img for img in coco.images if img.id in probed.probes]
    sampled = len(present) > sample_limit
    to_open = random.Random(0).sample(present, sample_limit) if sampled else present
    if to_open:
        from PIL import Image

        for img in to_open:
            try:
                with Image.open(staged.image_dir / img.file_name) as im:
                    im.load()  # decodes: catches truncated files that verify() lets through
            except Exception as exc:  # PIL raises many types for bad files
                unreadable.add(f"{img.file_name!r} ({type(exc).__name__}: {exc})"[:160])
    if sampled:
        unreadable.what += f" (every header read; pixels decoded in a sample of {len(to_open)} of {len(present)}; expect more)"
    return [f for g in (missing, unreadable) if (f := g.finding()) is not None], probed.probes


def _check_policy(split: str, coco: CocoSet, probes: dict[int, ImageProbe], strict: bool) -> list[Finding]:
    """The data policy the trainer applies (:mod:`dino.data.policy`), as findings: what it
    fixes is a warning, what it refuses (or, with ``strict``, anything) an error."""
    images = [ImageEntry(img.id, img.file_name, img.width, img.height) for img in coco.images]
    boxes = [BoxEntry(a.index, a.id, a.image_id, a.bbox) for a in coco.annotations]
    report = apply_policy(images, boxes, probes, strict=strict, source=str(coco.path))
    return [
        Finding(Severity.ERROR if f.refused else Severity.WARNING, f"{f.count} {f.what}",
                f"{split} {coco.path}: {f.examples_text()}", f.fix, code=f.code)
        for f in report.findings
    ]


def check_split(split: str, staged: StagedSplit, sample_limit: int = 500, strict: bool = False,
                progress: ProgressFn | None = None) -> tuple[CocoSet | None, list[Finding]]:
    """Data checks of one split: COCO format, image files, then the data policy."""
    coco, findings = read_coco(staged.json_file, split)
    if coco is None:
        return None, findings
    if not coco.images:
        findings.append(Finding(Severity.ERROR, "the annotations list no images", f"{split} {staged.json_file}", "add images to the split (or point at the right annotations file)", code="no_images"))
    elif not coco.annotations:
        findings.append(Finding(Severity.WARNING, "the split has no box annotations: there is nothing to learn or score", f"{split} {staged.json_file}", "check that the right annotations file was staged", code="no_annotations"))
    probes: dict[int, ImageProbe] = {}
    if not staged.image_dir.is_dir():
        findings.append(Finding(Severity.ERROR, "the image folder does not exist", f"{split} {staged.image_dir}", "stage the split again; an archive must hold a top folder named after its stem (images/)", code="image_dir_missing"))
    elif coco.images:
        image_findings, probes = _check_images(split, staged, coco, sample_limit, progress)
        findings += image_findings
    findings += _check_policy(split, coco, probes, strict)
    return coco, findings


def _check_num_classes(facts: SpecFacts, sets: list[CocoSet]) -> list[Finding]:
    nc = facts.num_classes
    seen = [(m, s) for s in sets if (m := s.max_category_id()) is not None]
    if nc is None or not seen:
        return []
    (max_id, entry), coco = max(seen, key=lambda t: t[0][0])
    needed = max_id + 1
    where = f"dataset.num_classes; category id {max_id} at {entry} of {coco.path}"
    if nc < needed:
        return [
            Finding(
                Severity.ERROR,
                f"dataset.num_classes is {nc} but the data use category id {max_id}, which needs num_classes >= {needed} (a CUDA device-side assert in training)",
                where,
                f"set dataset.num_classes to max(category_id) + 1 = {needed}",
                suggested_value=needed,
                setting="dataset.num_classes",
                code="num_classes_too_small",
            )
        ]
    if nc >= 2 * needed and nc > needed + 1:
        return [
            Finding(
                Severity.WARNING,
                f"dataset.num_classes is {nc} but the largest category id is {max_id}: {nc - needed} unused classes dilute the classifier",
                where,
                f"set dataset.num_classes to max(category_id) + 1 = {needed}",
                suggested_value=needed,
                setting="dataset.num_classes",
                code="num_classes_too_large",
            )
        ]
    return []


def _check_dataset_size(facts: SpecFacts, train: CocoSet) -> list[Finding]:
    bs, gpus = facts.batch_size, facts.num_gpus or 1
    n = len(train.images)
    if bs is None or bs < 1 or n == 0 or n >= bs * gpus:
        return []
    suggested = max(1, n // gpus)
    return [
        Finding(
            Severity.ERROR,
            f"the training split has {n} images, fewer than dataset.batch_size * train.num_gpus = {bs} * {gpus} = {bs * gpus} (no full batch)",
            f"dataset.batch_size; train {train.path}",
            f"add training images, or lower dataset.batch_size to {suggested}" + (" (or use fewer GPUs)" if gpus > 1 else ""),
            suggested_value=suggested,
            setting="dataset.batch_size",
            code="too_few_images",
        )
    ]


def preflight(
    train: StagedSplit,
    val: StagedSplit | None,
    facts: SpecFacts | None = None,
    sample_limit: int = 500,
    strict: bool = False,
    progress: ProgressFn | None = None,
) -> list[Finding]:
    """All checks; errors first. ``val`` None (or the same files as ``train``) is a warning.
    ``strict``: every data-policy fix (dropped, clipped or rescaled boxes, EXIF rotation) is
    an error instead of a warning, as the trainer's ``dataset.strict_data_policy``.
    ``progress(split, done, total)`` follows the header scan of every image."""
    facts = facts or SpecFacts()
    findings = check_spec(facts)
    train_set, train_findings = check_split("train", train, sample_limit, strict, progress)
    findings += train_findings
    sets = [train_set] if train_set is not None else []
    if val is None or val.same_files(train):
        findings.append(
            Finding(
                Severity.WARNING,
                "no validation source: the training split is used for validation, so val_mAP measures memorization, not generalization",
                "dataset.val_data_sources",
                "give a separate validation split (e.g. `--val s3://bucket/val` or the run config's val source)",
                code="val_reuses_train",
            )
        )
    else:
        val_set, val_findings = check_split("val", val, sample_limit, strict, progress)
        findings += val_findings
        if val_set is not None:
            sets.append(val_set)
    findings += _check_num_classes(facts, sets)
    if train_set is not None:
        findings += _check_dataset_size(facts, train_set)
    return sorted(findings, key=lambda f: 0 if f.is_error else 1)


def load_spec_facts(path: Path) -> SpecFacts:
    """SpecFacts from a spec YAML file (raises ConfigError when unreadable)."""
    import yaml

    from dino.config.yaml_values import load_yaml

    try:
        spec = load_yaml(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"spec file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"spec file {path} is not valid YAML: {exc}") from None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"spec file {path} does not hold a mapping of settings")
    return SpecFacts.from_spec(spec)
