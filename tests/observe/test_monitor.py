"""LogTail and TrialMonitor: only new bytes are read, whatever the file's size."""

from __future__ import annotations

import os
import time

import pytest

from automl.observe.monitor import LogTail, TrialMonitor, read_status_lines, read_tail_text
from metric_extractors import RegexExtractor, TaoStatusExtractor

GiB = 1 << 30


def test_tail_waits_for_the_file_then_reads_only_appended_bytes(tmp_path):
    path = tmp_path / "log.txt"
    tail = LogTail(path)
    assert tail.read() == b""
    path.write_bytes(b"one\ntw")
    assert tail.read() == b"one\ntw"
    assert tail.read() == b""
    with path.open("ab") as f:
        f.write(b"o\n")
    assert tail.read() == b"o\n"
    assert tail.offset == 8 and tail.generation == 0


def test_tail_restarts_after_truncation_and_rotation(tmp_path):
    path = tmp_path / "log.txt"
    path.write_bytes(b"first run, a long line\n")
    tail = LogTail(path)
    assert tail.read().startswith(b"first")
    path.write_bytes(b"new\n")  # truncated in place and rewritten, shorter
    assert tail.read() == b"new\n" and tail.generation == 1
    os.rename(path, tmp_path / "log.txt.1")  # rotated: a new file at the same path
    path.write_bytes(b"rotated and much longer than before\n")
    assert tail.read() == b"rotated and much longer than before\n" and tail.generation == 2


def test_start_at_end_skips_existing_content(tmp_path):
    path = tmp_path / "log.txt"
    path.write_bytes(b"old run\n")
    tail = LogTail(path, start_at_end=True)
    assert tail.read() == b""
    with path.open("ab") as f:
        f.write(b"resumed\n")
    assert tail.read() == b"resumed\n"


def test_monitor_drops_a_partial_line_of_a_replaced_file(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"Validation mAP50 : 0.9")  # cut: the job died mid-line
    monitor = TrialMonitor(tmp_path, log, RegexExtractor(epoch_pattern=None))
    assert monitor.poll() == []
    log.write_bytes(b"5\n")  # truncated: a fresh run; "0.95" must not be stitched together
    assert monitor.poll() == []
    with log.open("ab") as f:
        f.write(b"Validation mAP50 : 0.2\n")
    assert [m.values["val_mAP50"] for m in monitor.poll()] == [0.2]


def test_poll_cost_depends_on_new_bytes_not_on_a_1gb_file(tmp_path):
    """A 1 GiB log (sparse: the hole costs no disk) being appended to."""
    log = tmp_path / "big.log"
    with log.open("wb") as f:
        f.write(b"Epoch 0/10\n")
        f.truncate(GiB)
    if log.stat().st_blocks * 512 > 64 << 20:
        pytest.skip("this filesystem does not make sparse files")
    with log.open("ab") as f:
        f.write(b"\nEpoch 3/10\n")
    monitor = TrialMonitor(tmp_path, log, RegexExtractor(), from_start=False)
    assert monitor.poll() == []  # attached at the end: the gigabyte is never read
    elapsed, appended = 0.0, 0
    with log.open("ab") as f:
        for i in range(200):
            line = f"Validation mAP50 : {i / 1000:.3f}\n".encode()
            f.write(line)
            f.flush()
            appended += len(line)
            start = time.perf_counter()
            got = monitor.poll()
            elapsed += time.perf_counter() - start
            assert [m.values["val_mAP50"] for m in got] == [i / 1000]
            assert monitor.seen_summary().bytes_read == appended  # exactly the new bytes
    assert monitor.tail.offset == log.stat().st_size
    # stat + pread of a few bytes per poll; generous for a loaded 2-core machine
    assert elapsed < 2.0, f"200 polls of a 1 GiB file took {elapsed:.2f}s"


def test_catching_up_on_a_1gb_file_is_bounded_per_poll(tmp_path):
    log = tmp_path / "big.log"
    with log.open("wb") as f:
        f.truncate(GiB)
    monitor = TrialMonitor(tmp_path, log, RegexExtractor(), max_bytes_per_poll=8 << 20)
    monitor.poll()
    assert monitor.tail.offset == 8 << 20  # one poll never reads more than its limit
    monitor.poll()
    assert monitor.tail.offset == 16 << 20


def test_seen_summary_says_what_the_extractor_saw(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("starting\nloss=3.2\nValidation mAP : 0.1\nepoch done\n")
    monitor = TrialMonitor(tmp_path, log, RegexExtractor())
    monitor.poll()
    summary = monitor.seen_summary()
    assert summary.lines == 4 and summary.metric_names == ("val_mAP",) and summary.epochs == (0,)
    assert summary.last_lines[-1] == "epoch done"
    text = summary.describe("val_mAP50")
    assert "metric 'val_mAP50' never appeared" in text and "regex" in text
    assert "metrics it found: val_mAP" in text and "| epoch done" in text

    assert str(summary) == summary.describe()

    missing = TrialMonitor(tmp_path, log, TaoStatusExtractor())
    missing.poll()
    assert "never created" in missing.seen_summary().describe("val_mAP50")
    assert str(tmp_path / "train" / "status.json") in missing.seen_summary().describe()


def test_read_tail_helpers(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    tail = read_tail_text(log, max_bytes=100)
    assert tail.endswith("line 9999\n") and tail.startswith("line ")  # no cut first line
    assert read_tail_text(tmp_path / "missing") == ""
    status = tmp_path / "train" / "status.json"
    status.parent.mkdir()
    status.write_text('{"status": "STARTED"}\nnot json\n{"status": "FAILURE", "message": "x"}\n')
    assert TrialMonitor(tmp_path, tmp_path / "log.txt", RegexExtractor()).status_lines(1) == [
        {"status": "FAILURE", "message": "x"}
    ]
    assert read_status_lines(tmp_path) == [
        {"status": "STARTED"},
        {"status": "FAILURE", "message": "x"},
    ]
