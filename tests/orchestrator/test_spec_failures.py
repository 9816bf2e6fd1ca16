"""A spec the rules refuse is refused before data are staged; one they accept runs; and a
spec that cannot be rendered inside a trial fails that trial, never the whole study."""

import os
import time

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

import automl.study.objective as objective_module
from automl.config import build_run_config
from automl.errors import ConfigError
from automl.study.runner import open_study, run_study
from automl.ui.progress import ProgressBoard
from dino.config import load_spec
from dino.models.build import validate_model_config

from orchestrator_utils import scripted_config

EXTRA_LEVEL = {"model.num_feature_levels": 4, "model.return_interm_indices": [2, 3, 4]}


def _board():
    return ProgressBoard(Console(file=open(os.devnull, "w")), metric="val_mAP50")


def _config(tmp_path, coco_dirs, fixed=None, **over):
    base = {"train.num_epochs": 2, "dataset.batch_size": 2}
    return build_run_config(scripted_config(tmp_path, coco_dirs, fixed={**base, **(fixed or {})}, **over),
                            use_cpu_variant=False, where="test")


def test_the_papers_four_scale_setup_runs_and_the_trainer_accepts_its_spec(tmp_path, coco_dirs):
    """4 levels from stages 2-4 (one strided extra level): a preflight warning, then trials
    whose specs the bundled trainer's loader and model builder accept."""
    cfg = _config(tmp_path, coco_dirs, fixed=EXTRA_LEVEL, budget={"n_trials": 2}, pruner={"name": "none"})
    outcome = run_study(cfg, _board())
    study = optuna.load_study(study_name="scripted", storage=cfg.storage_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert outcome.exit_code == 0
    for trial in study.trials:
        spec, _ = load_spec(trial.user_attrs["spec_path"])
        assert (spec.model.num_feature_levels, spec.model.return_interm_indices) == (4, [2, 3, 4])
        validate_model_config(spec.model, spec.dataset.num_classes)


@pytest.mark.parametrize("fixed, names", [
    ({"model.num_feature_levels": 3, "model.return_interm_indices": [1, 2, 3, 4]}, "model.num_feature_levels"),
    ({"model.num_queries": 10, "dataset.num_classes": 3, "model.num_select": 30}, "model.num_select"),
])
def test_a_refused_spec_fails_in_seconds_before_any_data_are_staged(tmp_path, coco_dirs, fixed, names):
    cfg = _config(tmp_path, coco_dirs, fixed=fixed)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"(?s)no trial could run:.*{names}"):
        run_study(cfg, _board())
    assert time.monotonic() - start < 15
    workspace = tmp_path / "ws"
    assert not (workspace / "cache").exists() and not (workspace / "study.db").exists()


def test_a_rendering_error_inside_a_trial_fails_that_trial_and_the_study_goes_on(tmp_path, coco_dirs, monkeypatch):
    cfg = _config(tmp_path, coco_dirs, budget={"n_trials": 3})
    study = open_study(cfg)
    for lr in (2e-4, 1e-4, 3e-4):
        study.enqueue_trial({"train.optim.lr": lr})
    real_render = objective_module.render_spec

    def render(template, assignments, schema):
        if assignments["train.optim.lr"] == 1e-4:
            raise ConfigError("model.num_select (400) must be < model.num_queries * dataset.num_classes")
        return real_render(template, assignments, schema)

    monkeypatch.setattr(objective_module, "render_spec", render)
    outcome = run_study(cfg, _board())
    trials = optuna.load_study(study_name="scripted", storage=cfg.storage_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = trials[1].user_attrs
    assert failed["failure_code"] == "spec_error" and "could not be rendered" in failed["failure"]
    assert "model.num_select" in failed["failure"]
    assert outcome.best_trial in (0, 2) and outcome.counts["fail"] == 1
