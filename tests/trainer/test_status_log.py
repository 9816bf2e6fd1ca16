"""status.json lines carry TAO's keys and formats; kpi repeats once set."""

from __future__ import annotations

import re

from dino.status_log import StatusLog, read_status


def test_lines_have_tao_keys_and_sticky_kpi(tmp_path):
    log = StatusLog(str(tmp_path / "train" / "status.json"))
    log.write("Starting DINO train.", status="STARTED")
    log.kpi = {"val_mAP": "0.25", "val_mAP50": "0.5", "val_loss": 1.5}
    log.write("Eval metrics generated.")
    log.write("Training loop in progress", epoch=0, max_epoch=9, step=12, max_step=120,
              time_per_epoch="0:00:03.5", eta="0:00:31.5")
    log.write("boom", status="FAILURE", verbosity="ERROR")
    lines = read_status(str(tmp_path / "train" / "status.json"))
    assert [line["status"] for line in lines] == ["STARTED", "RUNNING", "RUNNING", "FAILURE"]
    for line in lines:
        assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", line["date"])
        assert re.fullmatch(r"\d{1,2}:\d{1,2}:\d{1,2}", line["time"])
        assert line["verbosity"] in ("INFO", "ERROR") and isinstance(line["message"], str)
    assert "kpi" not in lines[0]
    assert lines[1]["kpi"] == lines[3]["kpi"] == {"val_mAP": "0.25", "val_mAP50": "0.5", "val_loss": 1.5}
    assert {k: lines[2][k] for k in ("epoch", "max_epoch", "step", "max_step")} == \
        {"epoch": 0, "max_epoch": 9, "step": 12, "max_step": 120}


def test_reader_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "status.json"
    StatusLog(str(path)).write("ok")
    with open(path, "a") as f:
        f.write('{"date": "1/2/2026", "ti')
    assert [line["message"] for line in read_status(str(path))] == ["ok"]
