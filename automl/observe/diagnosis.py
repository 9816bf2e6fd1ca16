"""Why did a trial's job fail? A catalogue of known failure signatures.

:func:`diagnose` looks at what a failed job left behind (exit code, the tail of its log,
its ``status.json`` lines, the launcher's OOM flag) and names the cause and the fix, in
terms of the spec keys a user can change. Signatures are tried in catalogue order, most
specific first: a rank that ran out of GPU memory makes the other ranks report NCCL
timeouts later in the log, and the root cause is the one to name.
"""

from __future__ import annotations

import dataclasses
import re
import signal as _signal
from typing import Any, Callable, Iterable

from dino.config.rules import RULES_BY_CODE


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    code: str  # stable identifier, e.g. "cuda_oom"
    summary: str  # what happened, one line
    fix: str  # what to change
    evidence: str = ""  # the log line that gave it away

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        text = f"[{self.code}] {self.summary}"
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


@dataclasses.dataclass(frozen=True)
class Signature:
    code: str
    patterns: tuple[re.Pattern[str], ...]
    summary: str  # may use {path} / {line}
    fix: str
    applies: Callable[[int], bool] = lambda exit_code: True  # guard on the exit code


def _p(*regexes: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(r, re.IGNORECASE | re.MULTILINE) for r in regexes)


CATALOGUE: tuple[Signature, ...] = (
    Signature(
        "cuda_oom",
        _p(
            r"CUDA out of memory",
            r"OutOfMemoryError",
            r"CUDA error: out of memory",
            r"CUBLAS_STATUS_ALLOC_FAILED",
            r"cuDNN error: CUDNN_STATUS_(?:NOT_SUPPORTED|ALLOC_FAILED).*memory",
        ),
        "The GPU ran out of memory.",
        "Lower dataset.batch_size (or the input resolution / model.num_queries), or enable "
        "mixed precision; narrow dataset.batch_size's range in the search space.",
    ),
    Signature(
        "device_side_assert",
        _p(  # the kernel's own assertion line first: it is the better evidence
            r"Assertion `t >= 0 && t < n_classes` failed",
            r"Assertion `idx_dim >= 0 && idx_dim < index_size",
            r"device-side assert triggered",
            r"Class values must be smaller than num_classes",
        ),
        "A class id is outside [0, num_classes): a CUDA device-side assert (or one-hot "
        "error) in the loss.",
        "Set dataset.num_classes >= max(category_id) + 1 of the annotations (COCO ids often "
        "start at 1, so 4 classes need num_classes 5).",
    ),
    Signature(
        "num_select",
        _p(
            r"num_select\b[^\n]{0,120}\b(?:must|should|cannot|exceeds?)\b",
            r"selected index k out of range",
        ),
        f"The trainer refused the spec: {RULES_BY_CODE['num_select'].summary}.",
        RULES_BY_CODE["num_select"].fix,
    ),
    Signature(
        "interm_levels",
        _p(
            r"return_interm_indices\b[^\n]{0,120}\b(?:must|should|mismatch|equal|differ)",
            r"num_feature_levels\b[^\n]{0,120}\b(?:must|should|mismatch|equal|differ)",
        ),
        f"The trainer refused the spec: {RULES_BY_CODE['feature_levels'].summary}.",
        RULES_BY_CODE["feature_levels"].fix,
    ),
    Signature(
        "dataset_too_small",
        _p(
            r"num_samples should be a positive integer value",
            r"(?:smaller|fewer|less)\b.{0,40}\bthan\b.{0,40}batch",
            r"batch[ _]size\b.{0,60}\b(?:larger|greater|more|exceeds?)\b.{0,40}(?:dataset|images|samples)",
        ),
        "The dataset has fewer images than one batch (dataset.batch_size * train.num_gpus).",
        "Lower dataset.batch_size or train.num_gpus, or add images to the data source.",
    ),
    Signature(
        "gpu_ids",
        _p(r"gpu_ids\b[^\n]{0,120}\b(?:must|should|mismatch|expected|differ)"),
        f"The trainer refused the spec: {RULES_BY_CODE['gpu_ids'].summary}.",
        RULES_BY_CODE["gpu_ids"].fix,
    ),
    Signature(
        "invalid_device",
        _p(r"invalid device ordinal", r"device \d+ is not visible", r"CUDA_VISIBLE_DEVICES.*(?:invalid|no CUDA)"),
        "The job asked for a GPU it cannot see.",
        RULES_BY_CODE["gpu_ids"].fix,
    ),
    Signature(
        "nccl",
        _p(
            r"NCCL error",
            r"nccl(?:System|Internal|Unhandled(?:Cuda)?|InvalidUsage|Remote)Error",
            r"Watchdog caught collective operation timeout",
            r"ProcessGroupNCCL.*(?:timeout|timed out|error)",
        ),
        "Multi-GPU communication (NCCL) failed or timed out.",
        "Check that train.gpu_ids matches train.num_gpus and the launcher's devices; give the "
        "container --ipc=host or a larger --shm-size; try NCCL_P2P_DISABLE=1; rerun with "
        "NCCL_DEBUG=INFO. If one rank ran out of memory first, fix that.",
    ),
    Signature(
        "shared_memory",
        _p(
            r"insufficient shared memory",
            r"DataLoader worker \(pid \d+\) is killed by signal: Bus error",
            r"No space left on device.*(?:/dev/shm|shm)",
        ),
        "Data-loader workers ran out of shared memory (/dev/shm).",
        "Run the container with --ipc=host or a larger --shm-size, or lower dataset.workers.",
    ),
    Signature(
        "command_not_found",
        _p(r"\[automl\] cannot start", r"command not found", r"exec: .*: not found", r"executable file not found"),
        "The trainer command could not be started.",
        "Install the trainer (`pip install -e .` gives `dino`) or use the trainer image; "
        "check the command in the run config.",
        applies=lambda code: code in (126, 127),
    ),
    Signature(
        "missing_file",
        _p(
            r"FileNotFoundError.*?(?:'(?P<path>[^']+)'|\"(?P<path2>[^\"]+)\")?\s*$",
            r"No such file or directory:?\s*['\"]?(?P<path3>[^'\"\s]+)?",
            r"(?:does not exist|not found)(?: or not a (?:folder|directory|file))?\s*:\s*(?P<path4>/\S+)",
        ),
        "A file the job needs is missing: {path}.",
        "Check dataset.train_data_sources / dataset.val_data_sources (image_dir and "
        "json_file) point at staged data inside the job, and that the launcher mounts them.",
    ),
    Signature(
        "nan_loss",
        _p(r"Loss is nan", r"loss (?:is|became|went) (?:nan|inf)", r"non-finite loss",
           r"(?:cost|loss|outputs?) (?:is|are|became) (?:NaN|not finite)", r"training diverged"),
        "The training loss became NaN/inf (diverged).",
        "Lower train.optim.lr (and lr_backbone), keep gradient clipping "
        "(train.clip_grad_norm) on, or use fp32.",
    ),
    Signature(
        "data_refused",
        _p(r"the data policy refuses\b.*"),
        "The trainer refused the dataset (its data policy, dino/data/policy.py): {line}",
        "Fix the files as the job's log says; `automl dataset check --train SRC --val SRC` lists every "
        "finding with its file, image id and annotation id before any trial.",
    ),
    Signature(
        "spec_error",
        _p(
            r"^error: .*",
            r"(?:unknown|unrecognized|invalid) (?:key|override|option|field)s?\b.*",
            r"omegaconf\.errors\.\w+",
            r"Config(?:Key|Attribute|Type|Value)Error",
            r"\d+ validation errors? for \w+",
            r"(?:invalid|unknown) (?:spec|config|value)\b.*",
        ),
        "The trainer rejected its spec: {line}",
        "Fix that key in the run config's fixed overrides or the search space, then rerun "
        "(`automl space sample` shows the sampled values).",
    ),
)

_FIX_BY_SIGNAL = {
    "SIGKILL": "Usually the out-of-memory killer: lower dataset.workers and dataset.batch_size, "
    "or give the job more memory (the container's memory limit).",
    "SIGSEGV": "A native crash: check the CUDA/driver and torch versions of the trainer image; "
    "lower dataset.workers to rule out a data-loader crash.",
    "SIGBUS": "Usually /dev/shm too small: run the container with --ipc=host or a larger "
    "--shm-size, or lower dataset.workers.",
    "SIGABRT": "A native abort (often a CUDA or NCCL failure): read the lines before it in the log.",
    "SIGTERM": "Something outside the study stopped it (docker stop, a scheduler, shutdown).",
}


def _signal_of(exit_code: int) -> str | None:
    number = -exit_code if exit_code < 0 else exit_code - 128 if 128 < exit_code < 160 else 0
    if not number:
        return None
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _evidence_line(text: str, start: int, end: int) -> str:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : line_end if line_end >= 0 else len(text)].strip()
    return line[:300]


def _match(sig: Signature, text: str) -> tuple[re.Match[str], str] | None:
    """The last match of any of ``sig``'s patterns, tried in order."""
    for pattern in sig.patterns:
        last = None
        for match in pattern.finditer(text):
            last = match
        if last is not None:
            return last, _evidence_line(text, last.start(), last.end())
    return None


def _last_exception_line(text: str) -> str | None:
    """The ``SomeError: message`` line ending the last Python traceback."""
    head = text.rfind("Traceback (most recent call last):")
    if head < 0:
        return None
    for line in text[head:].splitlines()[1:]:
        if line.strip() and not line[:1].isspace():
            return line.strip()[:300]
    return None


def _status_failure(status_lines: Iterable[dict[str, Any]] | None) -> str | None:
    message = None
    for record in status_lines or ():
        if isinstance(record, dict) and str(record.get("status", "")).upper() == "FAILURE":
            message = str(record.get("message") or "").strip() or message
    return message


def diagnose(
    exit_code: int,
    log_tail: str,
    status_lines: list[dict[str, Any]] | None = None,
    oom_killed: bool = False,
) -> Diagnosis:
    """Name the cause of a failed job. ``exit_code`` uses the shell's 128+N for signals
    (negative values, as Popen reports them, are accepted too)."""
    failure_message = _status_failure(status_lines)
    text = log_tail or ""
    if failure_message:
        text += "\n" + failure_message
    if exit_code == 0 and not failure_message:
        return Diagnosis("ok", "The job exited normally (code 0).", "")
    if oom_killed:
        return Diagnosis(
            "host_oom",
            "The job was killed by the out-of-memory killer (host RAM or the container's limit).",
            "Lower dataset.workers and dataset.batch_size, or raise the memory limit.",
            "oom_killed",
        )
    for sig in CATALOGUE:
        if not sig.applies(exit_code):
            continue
        found = _match(sig, text)
        if found is None:
            continue
        match, line = found
        groups = {k: v for k, v in match.groupdict().items() if v}
        path = next(iter(groups.values()), "see the evidence line")
        summary = sig.summary.format(path=path, line=line)
        fix = sig.fix
        if sig.code == "missing_file" and re.search(r"val", f"{path} {line}", re.IGNORECASE):
            fix = (
                "Check dataset.val_data_sources (image_dir and json_file): the validation "
                "data must be staged and visible inside the job (mounted by the launcher)."
            )
        return Diagnosis(sig.code, summary, fix, line)
    name = _signal_of(exit_code)
    if name == "SIGKILL" and re.search(r"out of memory|oom[-_ ]?kill|^Killed\s*$", text, re.I | re.M):
        return Diagnosis(
            "host_oom",
            "The job was killed by SIGKILL after an out-of-memory report: the OOM killer.",
            "Lower dataset.workers and dataset.batch_size, or raise the memory limit.",
            _evidence_line(text, len(text.rstrip()), len(text.rstrip())),
        )
    if name:
        return Diagnosis(
            "killed_by_signal",
            f"The job was killed by {name} (exit code {exit_code}).",
            _FIX_BY_SIGNAL.get(name, "Read the end of the job's log."),
            _evidence_line(text, len(text.rstrip()), len(text.rstrip())) if text.strip() else "",
        )
    if failure_message:
        return Diagnosis(
            "trainer_failure",
            f"The trainer reported failure: {failure_message[:300]}",
            "Read the job's log around that message.",
            failure_message[:300],
        )
    exception = _last_exception_line(text)
    if exception:
        return Diagnosis(
            "python_exception",
            f"The trainer raised {exception}",
            "No known signature: read the traceback in the job's log.",
            exception,
        )
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return Diagnosis(
        "exit_code",
        f"The job exited with code {exit_code} and no known failure signature.",
        "Read the end of the job's log.",
        last[-1][:300] if last else "",
    )
