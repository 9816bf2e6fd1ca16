"""The champion: the model in use, replaced only by a night's best that beats it.

Layout of the champion folder (``nightly.champion.dir``)::

    current -> versions/<study>-t<NNNN>     what consumers read (a relative symlink)
    versions/<study>-t<NNNN>/
        spec.yaml  model.pth  model.onnx    the spec, checkpoint and ONNX export
        champion.json                       where it came from and what it scored

Promotion builds the new version in a temporary folder, renames it into ``versions/``
and then swaps ``current`` with one ``rename`` of a new symlink over the old one: at any
instant ``current`` is the old champion or the new one, complete. A night that crashes
before the swap leaves the champion as it was; a half-built temporary folder is removed
by the next promotion.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

CURRENT = "current"
VERSIONS = "versions"
INFO = "champion.json"
SPEC, CHECKPOINT, ONNX = "spec.yaml", "model.pth", "model.onnx"
_TMP_PREFIX = ".tmp-"


@dataclasses.dataclass(frozen=True)
class Champion:
    """The current champion, read from its ``champion.json``."""

    path: Path  # the version folder (resolved)
    study: str
    trial: int
    night: str
    params: dict[str, Any]
    study_metric: str
    study_value: float | None  # its value in its own study (validation metric)
    holdout_metric: str
    holdout_value: float | None  # its score when promoted
    promoted_at: str
    reason: str

    @property
    def spec(self) -> Path:
        return self.path / SPEC

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def onnx(self) -> Path | None:
        return self.path / ONNX if (self.path / ONNX).exists() else None

    @property
    def name(self) -> str:
        return f"{self.study}#{self.trial}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path")
        return data


class ChampionError(Exception):
    """The champion folder is unusable; the message says what and how to repair it."""


def current_champion(folder: Path) -> Champion | None:
    """The champion ``folder/current`` points at; None when there is none yet."""
    link = Path(folder) / CURRENT
    if not link.exists() and not link.is_symlink():
        return None
    target = link.resolve()
    info = target / INFO
    if not info.is_file():
        raise ChampionError(f"champion {link} -> {target} has no {INFO}; restore that version or remove "
                            f"{link} to let the next night's best become the champion")
    try:
        data = json.loads(info.read_text())
        return Champion(path=target, **data)
    except (ValueError, TypeError) as exc:
        raise ChampionError(f"{info} is not a champion record ({exc}); restore it or remove {link}") from None


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: float | None, champion: float | None, *, has_champion: bool, margin: float,
           maximize: bool, metric: str, candidate_error: str | None = None,
           champion_error: str | None = None) -> Decision:
    """Promote only on a real win: better than the champion by more than ``margin`` on the
    same held-out set. A tie, a loss, or a score that could not be measured keeps it."""
    if candidate is None:
        return Decision(False, f"the night's best could not be evaluated ({candidate_error or 'no score'})")
    if not has_champion:
        return Decision(True, f"no champion yet; the night's best scored {metric}={candidate:.4f}")
    if champion is None:
        return Decision(False, f"the champion could not be evaluated ({champion_error or 'no score'}); "
                               "kept, since nothing shows the night's best is better")
    gain = candidate - champion if maximize else champion - candidate
    if gain > margin:
        return Decision(True, f"wins: {metric} {candidate:.4f} vs champion {champion:.4f} "
                              f"({gain:+.4f}, margin {margin:g})")
    if gain == 0:
        return Decision(False, f"tie: {metric} {candidate:.4f} = champion {champion:.4f}; the champion stays")
    verdict = "loses" if gain < 0 else f"does not win by more than the margin {margin:g}"
    return Decision(False, f"{verdict}: {metric} {candidate:.4f} vs champion {champion:.4f} ({gain:+.4f})")


def _place(src: Path, dst: Path) -> None:
    """A hard link when on one filesystem (a checkpoint can be large), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def promote(folder: Path, *, spec: Path, checkpoint: Path, onnx: Path | None, study: str, trial: int, night: str,
            params: dict[str, Any], study_metric: str, study_value: float | None, holdout_metric: str,
            holdout_value: float | None, reason: str) -> Champion:
    """Make this model the champion, atomically (see the module docstring)."""
    folder = Path(folder)
    versions = folder / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    for stale in versions.glob(_TMP_PREFIX + "*"):  # left by a crashed promotion
        shutil.rmtree(stale, ignore_errors=True)
    name = f"{study}-t{trial:04d}"
    tmp = versions / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shutil.copyfile(spec, tmp / SPEC)
        _place(Path(checkpoint), tmp / CHECKPOINT)
        if onnx is not None:
            _place(Path(onnx), tmp / ONNX)
        info = {"study": study, "trial": trial, "night": night, "params": params, "study_metric": study_metric,
                "study_value": study_value, "holdout_metric": holdout_metric, "holdout_value": holdout_value,
                "promoted_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "reason": reason}
        (tmp / INFO).write_text(json.dumps(info, indent=2))
        _fsync_dir(tmp)
        final, n = versions / name, 1
        while final.exists():  # the same trial promoted again (a re-run night): a new version beside it
            n += 1
            final = versions / f"{name}.{n}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link_tmp = folder / f"{_TMP_PREFIX}{CURRENT}-{uuid.uuid4().hex[:8]}"
    os.symlink(Path(VERSIONS) / final.name, link_tmp)
    os.replace(link_tmp, folder / CURRENT)  # the atomic swap
    _fsync_dir(folder)
    champion = current_champion(folder)
    assert champion is not None
    return champion


def prune_versions(folder: Path, keep: int) -> list[Path]:
    """Remove champion versions beyond the ``keep`` newest; the current one always stays."""
    versions = Path(folder) / VERSIONS
    if not versions.is_dir():
        return []
    link = Path(folder) / CURRENT
    current = link.resolve() if link.exists() else None
    dirs = [p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(_TMP_PREFIX)]
    dirs.sort(key=lambda p: (p / INFO).stat().st_mtime if (p / INFO).exists() else 0.0, reverse=True)
    removed = []
    for old in dirs[keep:]:
        if current is not None and old.resolve() == current:
            continue
        shutil.rmtree(old)
        removed.append(old)
    return removed
