"""Everything a config can get wrong that the host decides is an error before any data
are staged and before trial 0: a real ``automl run`` exits 2 with one clear message,
leaves no trial in the storage and stages nothing."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from automl.errors import ConfigError, UserError
from automl.study.checks import check_devices, check_workspace

from orchestrator_utils import scripted_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def _automl_run(config: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "automl", "run", "--config", str(config), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _trials(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] if "trials" in tables else 0


@pytest.mark.parametrize("metric, expected", [
    ({"extractor": "regex", "extractor_options": {"patterns": {"val_mAP50": "(?P<value>[0-9."}}},
     "is not a valid regular expression"),
    ({"extractor": "regx"}, "metric extractor 'regx' is neither a known name"),
    ({"extractor": "regex", "extractor_options": {"pattern": "x"}}, "has no option 'pattern'"),
    ({"name": "val_mAP75", "direction": "maximize", "extractor": "regex"},
     "extractor 'regex' can only produce val_mAP50, val_mAP, train_loss"),
])
def test_extractor_mistakes_run_no_trial_and_stage_nothing(tmp_path, coco_dirs, metric, expected):
    config = write_config(tmp_path, scripted_config(tmp_path, coco_dirs, metric={"name": "val_mAP50", **metric}))
    proc = _automl_run(config)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    ws = tmp_path / "ws"
    assert _trials(ws / "study.db") == 0
    assert not (ws / "cache").exists() and not (ws / "scripted").exists()


def test_devices_without_such_a_gpu_is_an_error_not_a_cpu_run_called_cuda(tmp_path, coco_dirs):
    from automl.study.slots import detect_gpus

    visible = detect_gpus()
    config = write_config(tmp_path, scripted_config(tmp_path, coco_dirs))
    proc = _automl_run(config, "--devices", str(len(visible)))  # one index past the last GPU (0 without any)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("has none that nvidia-smi can see" if not visible else "do not exist here") in proc.stderr
    assert _trials(tmp_path / "ws" / "study.db") == 0 and not (tmp_path / "ws" / "cache").exists()


def test_check_devices_against_what_the_host_has():
    check_devices("cpu", visible=[])
    check_devices("auto", visible=[])
    check_devices([1, 0], visible=[0, 1, 2])
    with pytest.raises(ConfigError, match=r"GPU\(s\) \[3\] do not exist here; this host has GPUs \[0, 1\]"):
        check_devices([0, 3], visible=[0, 1])
    with pytest.raises(ConfigError, match="use devices: cpu"):
        check_devices([0], visible=[])
    with pytest.raises(ConfigError, match="listed more than once"):
        check_devices([0, 0], visible=[0])


def test_an_unusable_workspace_is_a_message(tmp_path, coco_dirs):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="workspace .*a-file/ws cannot be written: a part of the path is a file.*"
                       "pass --workspace"):
        check_workspace(blocker / "ws", blocker / "ws" / "study")
    config = write_config(tmp_path, scripted_config(tmp_path, coco_dirs, workspace=str(blocker / "ws")))
    proc = _automl_run(config)
    assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_database_is_a_message_before_staging(tmp_path, coco_dirs):
    raw = scripted_config(tmp_path, coco_dirs)
    raw["study"]["storage"] = "postgresql+psycopg2://automl:secret@127.0.0.1:9/automl"  # nothing listens on port 9
    proc = _automl_run(write_config(tmp_path, raw))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot open the study storage" in proc.stderr and "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr + proc.stdout
    assert not (tmp_path / "ws" / "cache").exists()


def test_a_local_trainer_command_that_does_not_exist_runs_no_trial(tmp_path, coco_dirs):
    raw = scripted_config(tmp_path, coco_dirs, trainer={"command": ["no-such-trainer-xyz", "train"],
                                                         "space": str(tmp_path / "space.yaml")})
    proc = _automl_run(write_config(tmp_path, raw))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "trainer.command: 'no-such-trainer-xyz' is not an executable on this host" in proc.stderr
    assert _trials(tmp_path / "ws" / "study.db") == 0 and not (tmp_path / "ws" / "cache").exists()
