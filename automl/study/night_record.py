"""The run record of the nightly: one JSON line per step of a night, appended.

A night appends a ``running`` line when it starts and its full record when it ends, so a
night killed outright (power loss, ``kill -9``) still shows in the history, as *died*.
Readers keep the last line of each ``run_id``. Lines are appended with one ``write`` on
an ``O_APPEND`` file, so a skipped night of another process never interleaves with them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["running", "done", "crashed", "interrupted", "skipped"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DataRecord(_Part):
    train: str = ""
    val: str = ""
    holdout: str = ""
    staged_afresh: list[str] = Field(default_factory=list)  # splits whose sources changed since last staged


class WarmStartRecord(_Part):
    from_studies: list[str] = Field(default_factory=list)
    enqueued: list[str] = Field(default_factory=list)  # "<study>#<n>" of each enqueued parameter set
    seeded: int = 0
    left_out: int = 0


class EvaluationRecord(_Part):
    metric: str = ""
    candidate: float | None = None
    candidate_error: str | None = None
    champion: float | None = None
    champion_error: str | None = None
    champion_name: str | None = None  # "<study>#<n>" of the champion evaluated
    candidate_log: str | None = None
    champion_log: str | None = None


class NightRecord(_Part):
    run_id: str
    night: str  # YYYY-MM-DD
    study: str
    status: Status
    started_at: str
    finished_at: str | None = None
    reason: str = ""  # why skipped / promoted or not / what crashed
    error: str | None = None
    stopped_on_time: bool = False  # the budget ended tuning; running trials were stopped and re-queued
    data: DataRecord = Field(default_factory=DataRecord)
    warm_start: WarmStartRecord = Field(default_factory=WarmStartRecord)
    trials: dict[str, int] = Field(default_factory=dict)  # state -> count, seeded trials not included
    best_trial: int | None = None
    best_value: float | None = None  # in the study's metric
    study_metric: str = ""
    evaluation: EvaluationRecord = Field(default_factory=EvaluationRecord)
    promoted: bool = False
    champion: str | None = None  # "<study>#<n>" of the champion after this night
    champion_value: float | None = None  # its held-out score this night
    removed_checkpoints: int = 0
    removed_champions: int = 0
    durations: dict[str, float] = Field(default_factory=dict)  # step -> seconds

    def display_status(self, live: bool) -> str:
        """``running`` only while its process still holds the lock; else it died."""
        if self.status == "running" and not live:
            return "died"
        return self.status


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def append_record(path: Path, record: NightRecord) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (record.model_dump_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path) -> list[NightRecord]:
    """Every night, its latest line, in the order the nights started. A torn last line
    (the writer died mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    latest: dict[str, NightRecord] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = NightRecord.model_validate(json.loads(line))
        except ValueError:
            continue
        latest[record.run_id] = record  # dict keeps the first insertion's place
    return list(latest.values())
