"""The peak GPU memory a job reports in status.json, read incrementally."""

import json

from automl.observe.memory import PEAK_FIELD, PeakMemoryReader


def _append(path, text):
    with open(path, "a") as fh:
        fh.write(text)


def test_reads_the_largest_peak_across_partial_lines_and_ignores_the_rest(tmp_path):
    status = tmp_path / "train" / "status.json"
    reader = PeakMemoryReader(tmp_path)
    assert reader.poll() is None  # no file yet
    status.parent.mkdir()
    _append(status, json.dumps({"status": "STARTED", "message": "Starting"}) + "\n")
    line = json.dumps({"status": "RUNNING", "epoch": 0, PEAK_FIELD: 13_000})
    _append(status, line[:20])  # half a line: nothing yet
    assert reader.poll() is None
    _append(status, line[20:] + "\n")
    assert reader.poll() == 13_000
    _append(status, json.dumps({"epoch": 1, PEAK_FIELD: 12_000}) + "\n")  # a lower one
    _append(status, '{"epoch": 2, "peak_gpu_memory_mib": "lots"}\n' + "not json peak_gpu_memory_mib\n")
    assert reader.poll() == 13_000
    _append(status, json.dumps({"epoch": 3, PEAK_FIELD: 14_500.4}) + "\n")
    assert reader.poll() == 14_500
    reader.close()


def test_a_truncated_file_is_read_again_from_its_start(tmp_path):
    status = tmp_path / "train" / "status.json"
    status.parent.mkdir()
    status.write_text(json.dumps({PEAK_FIELD: 9_000}) + "\n" + '{"epoch": 1, "peak_gpu')
    reader = PeakMemoryReader(tmp_path)
    assert reader.poll() == 9_000
    status.write_text(json.dumps({PEAK_FIELD: 20_000}) + "\n")  # rewritten, shorter
    assert reader.poll() == 20_000
