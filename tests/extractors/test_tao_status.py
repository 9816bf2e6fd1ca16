"""tao_status on status.json lines in TAO's format (see DESIGN.md)."""

from __future__ import annotations

import json
import random

from metric_extractors import EpochMetrics, TaoStatusExtractor


def _line(**fields) -> str:
    base = {"date": "11/3/2026", "time": "10:01:02", "status": "RUNNING", "verbosity": "INFO"}
    return json.dumps({**base, **fields}) + "\n"


def tao_run() -> str:
    """What TAO's DINO writes for 3 epochs: the validation kpi arrives on a line with no
    epoch, training replaces the kpi with train_loss, and the epoch line repeats the last
    kpi. Epoch 1 and 2 have identical mAPs (a model stuck at 0 early on does that)."""
    text = _line(status="STARTED", message="Starting DINO training.")
    vals = [("0.0012", "0.0045"), ("0.0", "0.0"), ("0.0", "0.0")]
    for epoch, (m, m50) in enumerate(vals):
        text += _line(message="Eval metrics generated.", kpi={"val_mAP": m, "val_mAP50": m50, "val_loss": 18.5 - epoch})
        text += _line(message="Train metrics generated.", kpi={"train_loss": f"{17.9 - epoch:.2f}"})
        text += _line(
            message="Training loop in progress",
            epoch=epoch,
            max_epoch=3,
            time_per_epoch="0:00:41.237",
            eta="0:01:22",
            kpi={"train_loss": f"{17.9 - epoch:.2f}"},
        )
    text += _line(status="SUCCESS", message="Training finished successfully.", kpi={"train_loss": "15.90"})
    return text


EXPECTED_FINAL = {
    0: {"val_mAP": 0.0012, "val_mAP50": 0.0045, "val_loss": 18.5, "train_loss": 17.9},
    1: {"val_mAP": 0.0, "val_mAP50": 0.0, "val_loss": 17.5, "train_loss": 16.9},
    2: {"val_mAP": 0.0, "val_mAP50": 0.0, "val_loss": 16.5, "train_loss": 15.9},
}


def _final(emitted: list[EpochMetrics]) -> dict[int, dict[str, float]]:
    final: dict[int, dict[str, float]] = {}
    for item in emitted:
        final[item.epoch] = item.values
    return final


def test_tao_run_gives_each_epoch_once_with_string_values_converted():
    ex = TaoStatusExtractor()
    emitted = ex.feed(tao_run().encode()) + ex.flush()
    assert [m.epoch for m in emitted] == [0, 1, 2]  # once each, in order
    assert _final(emitted) == EXPECTED_FINAL
    assert all(isinstance(v, float) for m in emitted for v in m.values.values())


def test_identical_values_in_consecutive_epochs_are_still_reported():
    ex = TaoStatusExtractor()
    emitted = ex.feed(tao_run().encode())
    assert [m.values["val_mAP50"] for m in emitted] == [0.0045, 0.0, 0.0]


def test_any_chunking_gives_the_same_metrics_as_one_block():
    data = tao_run().encode()
    whole = TaoStatusExtractor().feed(data)
    rng = random.Random(0)
    for _ in range(20):
        ex = TaoStatusExtractor()
        got: list[EpochMetrics] = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 97)
            got += ex.feed(data[pos : pos + step])
            pos += step
        assert got == whole
    byte_by_byte = TaoStatusExtractor()
    assert sum((byte_by_byte.feed(data[i : i + 1]) for i in range(len(data))), []) == whole


def test_partial_last_line_is_held_until_complete():
    ex = TaoStatusExtractor()
    line = _line(epoch=4, kpi={"val_mAP50": "0.61"})
    assert ex.feed(line[:25].encode()) == []
    assert ex.feed(line[25:-1].encode()) == []  # everything but the newline
    assert ex.feed(b"\n") == [EpochMetrics(4, {"val_mAP50": 0.61})]


def test_flush_parses_an_unterminated_last_line():
    ex = TaoStatusExtractor()
    assert ex.feed(_line(epoch=0, kpi={"val_mAP50": "0.1"}).rstrip("\n").encode()) == []
    assert ex.flush() == [EpochMetrics(0, {"val_mAP50": 0.1})]


def test_junk_cut_lines_crlf_and_invalid_utf8_are_survived():
    good0 = _line(epoch=0, kpi={"val_mAP50": "0.2"})
    good1 = _line(epoch=1, kpi={"val_mAP50": "0.3"})
    data = (
        b"Traceback? not json at all\n"
        + good0[:40].encode()  # a line cut mid-way (writer killed), then a new line
        + b"\n"
        + b"\xff\xfe\x80 garbage bytes {\n"
        + b"[1, 2, 3]\n"  # valid JSON, not an object
        + good0.replace("\n", "\r\n").encode()
        + json.dumps({"epoch": 1, "kpi": {"val_mAP50": "n/a", "note": "\xe9t\xe9"}}).encode()
        + b"\n"
        + good1.encode()
    )
    ex = TaoStatusExtractor()
    assert ex.feed(data) == [
        EpochMetrics(0, {"val_mAP50": 0.2}),
        EpochMetrics(1, {"val_mAP50": 0.3}),
    ]


def test_kpi_on_the_epoch_line_and_top_level_train_loss():
    ex = TaoStatusExtractor()
    got = ex.feed(
        (
            _line(epoch=0, train_loss=3.5, kpi={"val_mAP": 0.1, "val_mAP50": "0.2"})
            + _line(epoch=1, train_loss="3.1")
            + _line(epoch=1, kpi={"val_mAP50": "0.25"})
        ).encode()
    )
    assert got == [
        EpochMetrics(0, {"train_loss": 3.5, "val_mAP": 0.1, "val_mAP50": 0.2}),
        EpochMetrics(1, {"train_loss": 3.1}),  # epoch 1's loss first
        EpochMetrics(1, {"train_loss": 3.1, "val_mAP50": 0.25}),  # re-emitted, complete
    ]


def test_epochless_writer_counts_validations_from_zero():
    ex = TaoStatusExtractor()
    got = ex.feed(
        (
            _line(kpi={"val_mAP50": "0.1"})
            + _line(message="still going", kpi={"val_mAP50": "0.1"})  # sticky repeat
            + _line(kpi={"val_mAP50": "0.4"})
            + _line(kpi={"val_mAP50": "0.5"})
        ).encode()
    )
    got += ex.flush()
    assert got == [
        EpochMetrics(0, {"val_mAP50": 0.1}),
        EpochMetrics(1, {"val_mAP50": 0.4}),
        EpochMetrics(2, {"val_mAP50": 0.5}),
    ]


def test_nan_loss_is_kept_and_its_repeats_are_not_new():
    ex = TaoStatusExtractor()
    got = ex.feed((_line(epoch=0, kpi={"train_loss": "nan"}) + _line(epoch=0, kpi={"train_loss": "nan"})).encode())
    assert len(got) == 1 and got[0].values["train_loss"] != got[0].values["train_loss"]


def test_reads_a_growing_file_through_the_monitor(tmp_path):
    from automl.observe.monitor import TrialMonitor

    status = tmp_path / "train" / "status.json"
    monitor = TrialMonitor(tmp_path, tmp_path / "log.txt", TaoStatusExtractor())
    assert monitor.poll() == []  # not created yet
    status.parent.mkdir()
    text = tao_run()
    cut = text.index('"epoch": 1') + 5  # mid-way through epoch 1's epoch line
    status.write_text(text[:cut])
    first = monitor.poll()
    assert [m.epoch for m in first] == [0]
    with status.open("a") as f:
        f.write(text[cut:])
    second = monitor.poll() + monitor.finish()
    assert _final(first + second) == EXPECTED_FINAL


def test_the_bundled_trainers_status_log_read_while_it_grows(tmp_path):
    """The exact write sequence of dino/train.py, through its own StatusLog, polled between
    writes; then a kill and a resume from the epoch-1 checkpoint appending to the file."""
    from automl.observe.monitor import TrialMonitor
    from dino.status_log import StatusLog

    status = StatusLog(str(tmp_path / "train" / "status.json"))
    monitor = TrialMonitor(tmp_path, tmp_path / "log.txt", TaoStatusExtractor())
    curve = {0: (0.01, 0.05), 1: (0.0, 0.0), 2: (0.0, 0.0), 3: (0.2, 0.4)}
    seen: list[EpochMetrics] = []

    def run_epochs(epochs):
        for epoch in epochs:
            m, m50 = curve[epoch]
            seen.extend(monitor.poll())
            status.kpi = {"val_mAP": str(m), "val_mAP50": str(m50), "val_loss": 9.0 - epoch}
            status.write("Eval metrics generated.")
            seen.extend(monitor.poll())
            status.kpi["train_loss"] = 10.0 - epoch
            status.write("Training loop in progress", epoch=epoch, max_epoch=3, step=5 * (epoch + 1),
                         max_step=20, time_per_epoch="0:00:01.5", time_per_step="0:00:00.3", eta="0:00:03")
            seen.extend(monitor.poll())

    status.write("Starting Training Loop.", status="STARTED")
    run_epochs([0, 1])
    # killed during epoch 2; the resumed run restores the kpi from the checkpoint
    resumed = StatusLog(status.path)
    resumed.kpi = dict(status.kpi)
    resumed.write("Resuming training from model_epoch_001_step_10.pth (epoch 1 finished, step 10)")
    resumed.write("Starting Training Loop.", status="STARTED")
    status = resumed
    run_epochs([2, 3])
    status.write("Training loop complete.")
    seen += monitor.finish()

    assert [m.epoch for m in seen] == [0, 1, 2, 3]
    assert [m.values["val_mAP50"] for m in seen] == [0.05, 0.0, 0.0, 0.4]
    assert seen[3].values == {"val_mAP": 0.2, "val_mAP50": 0.4, "val_loss": 6.0, "train_loss": 7.0}
