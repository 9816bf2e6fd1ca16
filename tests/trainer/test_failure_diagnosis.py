"""The orchestrator's failure diagnosis on what the real trainer writes when it fails:
its stdout/stderr and its status.json, not hand-written log text. Each failure gets its
own diagnosis, with the fix naming the spec keys (a generic ``spec_error`` only for
what has no better one)."""

from __future__ import annotations

import pytest

from automl.observe.diagnosis import diagnose
from automl.observe.monitor import read_status_lines

from dino_test_utils import run_dino, tiny_spec, write_spec

CASES = {
    # name: (overrides, exit code, diagnosis code, words the fix must hold)
    "feature_levels": (["model.num_feature_levels=2"], 2, "interm_levels", "model.num_feature_levels"),
    "num_select": (["model.num_select=100"], 2, "num_select", "model.num_select"),
    "gpu_ids": (["train.num_gpus=2", "train.gpu_ids=[0]"], 2, "gpu_ids", "train.gpu_ids"),
    "dataset_too_small": (["dataset.batch_size=64"], 2, "dataset_too_small", "dataset.batch_size"),
    "missing_val": (["dataset.val_data_sources=[{image_dir: /nonexistent/val/images, "
                     "json_file: /nonexistent/val/annotations.json}]"], 2, "missing_file", "dataset.val_data_sources"),
    "diverged": (["train.optim.lr=1e8", "train.clip_grad_norm=0"], 1, "nan_loss", "train.optim.lr"),
    "unknown_key": (["train.lr=0.1"], 2, "spec_error", "search space"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_real_trainers_failure_is_diagnosed(shapes_small, tmp_path, case):
    overrides, exit_code, code, fix_words = CASES[case]
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(shapes_small, results, train={"num_epochs": 1}))
    proc = run_dino("train", "-e", str(spec), *overrides)
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr  # what the local launcher captures in stdout.log
    status = read_status_lines(results)
    if exit_code == 2 and case != "unknown_key":  # bad input after the spec was read: a FAILURE line says it
        assert status and status[-1]["status"] == "FAILURE"
    found = diagnose(proc.returncode, log, status)
    assert found.code == code, (found, log[-2000:])
    assert fix_words in found.fix
    assert found.evidence  # the line that gave it away, shown to the user
