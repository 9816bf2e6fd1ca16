"""The report and the closing summary tell a study's story: learners apart from flat curves,
pruned trials marked where they stopped, importances only when they mean something.

Studies are built with ``optuna.create_study`` + ``add_trial(create_trial(...))`` so every
curve, prune epoch and rule is known; the curves are checked through the series
:func:`automl.ui.curves.plot_curves` returns (what it drew), not through pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image
from rich.console import Console

from automl.study.digest import digest_study, digest_trials
from automl.study.events import StudyClosed
from automl.study.showcase import Picture, Showcase
from automl.ui.curves import BEST_COLOR, STATE_COLORS, plot_curves
from automl.ui.progress import ProgressBoard
from automl.ui.report import write_report
from automl.ui.summary import closing_lines

DISTS = {"train.optim.lr": FloatDistribution(1e-5, 1e-2, log=True), "model.dn_number": IntDistribution(0, 20)}
LEARNERS = {  # trial number -> curve; they reach 0.47..0.74
    0: [0.02, 0.15, 0.35, 0.50, 0.58, 0.62],
    3: [0.05, 0.30, 0.55, 0.70, 0.74, 0.71],
    7: [0.01, 0.10, 0.30, 0.42, 0.45, 0.47],
}
FLAT_COMPLETE = {5: [0.010, 0.012, 0.011, 0.013, 0.012, 0.014]}  # ran all epochs, learned nothing
PRUNED = {  # trial number -> (curve, prune_epoch attribute, rule attribute)
    1: ([0.004, 0.006, 0.005], 2, None),
    2: ([0.010, 0.008, 0.012], 2, "not_learning"),
    4: ([0.003, 0.007, 0.004, 0.009], 3, None),
    8: ([0.020, 0.030, 0.050, 0.060, 0.050], 3, None),  # an epoch reported after the decision
}
FAILED = {6: [0.010, 0.020]}


def _params(number: int) -> dict:
    lr = 2e-3 if number in LEARNERS else (1e-5 * 3**number if number % 2 else 9e-3)
    return {"train.optim.lr": min(lr, 9e-3), "model.dn_number": number}


def _mixed_study(tmp_path: Path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="story", storage=url, direction="maximize")
    study.set_user_attr("metric", "val_mAP50")
    for number in range(9):
        if number in LEARNERS or number in FLAT_COMPLETE:
            curve = LEARNERS.get(number) or FLAT_COMPLETE[number]
            trial = create_trial(params=_params(number), distributions=DISTS, value=max(curve),
                                 intermediate_values=dict(enumerate(curve)))
        elif number in PRUNED:
            curve, epoch, rule = PRUNED[number]
            user_attrs: dict = {"prune_epoch": epoch}
            if rule:
                user_attrs["pruned_by"] = rule
            trial = create_trial(params=_params(number), distributions=DISTS, state=TrialState.PRUNED,
                                 intermediate_values=dict(enumerate(curve)), user_attrs=user_attrs)
        else:
            trial = create_trial(params=_params(number), distributions=DISTS, state=TrialState.FAIL,
                                 intermediate_values=dict(enumerate(FAILED[number])),
                                 user_attrs={"failure": "CUDA out of memory at epoch 1 [red]x[/]"})
        study.add_trial(trial)
    return url, study


def test_curves_separate_learners_and_mark_pruned_trials_where_they_stopped(tmp_path):
    url, study = _mixed_study(tmp_path)
    digest = digest_study(study, "val_mAP50")
    # "learned": halfway from the median first epoch (0.01) to the best (0.74)
    assert digest.rule.start == pytest.approx(0.01)
    assert digest.rule.threshold == pytest.approx(0.01 + 0.5 * (0.74 - 0.01))
    assert [t.number for t in digest.learned] == [0, 3, 7]
    assert digest.best is not None and digest.best.number == 3 and digest.best.best_epoch == 4

    drawn = plot_curves(digest, tmp_path / "curves.png")
    series = {s.number: s for s in drawn.series}
    assert set(series) == set(range(9))
    assert series[3].best and series[3].color == BEST_COLOR
    assert series[3].linewidth > max(s.linewidth for n, s in series.items() if n != 3)
    for n in (0, 7):
        assert series[n].color == STATE_COLORS[TrialState.COMPLETE] and series[n].learned
    assert series[5].color == STATE_COLORS[TrialState.COMPLETE] and not series[5].learned
    assert series[5].linewidth < series[0].linewidth  # flat curves recede
    for n, (curve, epoch, rule) in PRUNED.items():
        s = series[n]
        assert s.color == STATE_COLORS[TrialState.PRUNED] and s.stop_marker == "X"
        assert s.stop == (epoch, curve[epoch])  # at the prune epoch, on the curve
        assert s.note == f"#{n} pruned @{epoch}" + (f" by {rule}" if rule else "")
    assert series[6].color == STATE_COLORS[TrialState.FAIL] and series[6].stop == (1, 0.02)
    # 0.006 (flattest peak) and 0.74 are two decades apart: a symmetric-log axis, linear below 1e-3
    assert drawn.scale == "symlog" and drawn.linthresh == pytest.approx(1e-3)
    assert drawn.threshold == pytest.approx(digest.rule.threshold)
    with Image.open(tmp_path / "curves.png") as png:
        assert png.size[0] > 800 and png.size[1] > 450

    out = tmp_path / "report"
    page = write_report(url, "story", out).read_text()
    glance = page.split("<h2>At a glance</h2>")[1].split("</ul>")[0]
    assert "<b>3 of 9 trials learned</b> (#0, #3, #7): val_mAP50 &gt;= 0.375" in glance
    assert "<b>4 pruned</b>: 2 at epoch 2 (#1, #2 by not_learning); 2 at epoch 3 (#4, #8)" in glance
    assert "<b>#6 failed</b>: CUDA out of memory at epoch 1" in glance
    assert "<b>Best</b>: trial #3, val_mAP50 0.74, best epoch 4" in glance
    # 8 finished trials spread far beyond noise: importances are computed and drawn
    assert "PED-ANOVA over 4 complete and 4 pruned trials" in glance
    assert (out / "importances.png").is_file() and 'src="importances.png"' in page
    assert set(digest.importances.values) == set(DISTS)
    assert sum(digest.importances.values.values()) == pytest.approx(1.0)
    assert (out / "epoch_curves.png").is_file()


def test_importances_left_out_with_three_finished_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="three", storage=url, direction="maximize")
    for number, curve in ((0, [0.02, 0.4, 0.6]), (1, [0.01, 0.02, 0.01]), (2, [0.03, 0.3, 0.5])):
        study.add_trial(create_trial(params=_params(number), distributions=DISTS, value=max(curve),
                                     intermediate_values=dict(enumerate(curve))))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "importances.png").write_bytes(b"an earlier report's figure")
    page = write_report(url, "three", tmp_path / "r").read_text()
    reason = "only 3 finished trial(s) with a reported objective; they need at least 5"
    assert f"Left out: {reason}." in page
    assert f"<b>Importances left out</b>: {reason}" in page
    assert not (tmp_path / "r" / "importances.png").exists()
    digest = digest_study(study, "val_mAP50")
    lines = [text for text, _ in closing_lines(StudyClosed(digest, 3.0))]
    assert "importances left out: only 3 finished trial(s) with a reported val_mAP50; they need at least 5" in lines
    assert [t.number for t in digest.learned] == [0, 2]


def test_a_study_of_noise_has_no_learner_and_no_importances(tmp_path):
    """The first CPU smoke run: every curve below 0.02; the report must not pretend."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="noise", storage=url, direction="maximize")
    for number in range(7):
        curve = [0.003, 0.005 + 0.0025 * number, 0.004 + 0.002 * number, 0.006, 0.005]  # peaks 0.006..0.02
        study.add_trial(create_trial(params=_params(number), distributions=DISTS, value=max(curve),
                                     intermediate_values=dict(enumerate(curve))))
    digest = digest_study(study, "val_mAP50")
    assert digest.learned == [] and digest.rule.threshold is None
    assert digest.importances.values == {}
    assert "spans only 0.006..0.02 (less than 0.05 apart): that is noise" in digest.importances.reason
    drawn = plot_curves(digest, tmp_path / "c.png")
    assert drawn.scale == "linear" and drawn.threshold is None  # nothing to separate
    page = write_report(url, "noise", tmp_path / "r").read_text()
    assert "<b>No trial learned</b>: no trial moved objective from the typical first epoch" in page
    assert not (tmp_path / "r" / "importances.png").exists()


def test_learned_rule_for_a_minimised_metric():
    trials = []
    for number, curve in enumerate(([2.0, 1.2, 0.6, 0.5], [2.1, 2.0, 1.9, 2.0], [1.9, 1.0, 0.9, 0.8],
                                    [2.0, 2.05, 2.02, 1.98])):
        trials.append(create_trial(params=_params(number), distributions=DISTS, value=min(curve),
                                   intermediate_values=dict(enumerate(curve))))
    for number, trial in enumerate(trials):
        trial.number = number
    digest = digest_trials(trials, maximize=False, metric="val_loss")
    # median first epoch 2.0, best 0.5: learners are at or below 1.25
    assert digest.rule.threshold == pytest.approx(1.25)
    assert [t.number for t in digest.learned] == [0, 2]
    assert "val_loss <= 1.25" in digest.rule.describe()


def test_closing_summary_through_the_progress_board(tmp_path):
    url, study = _mixed_study(tmp_path)
    digest = digest_study(study, "val_mAP50")
    folder = tmp_path / "report" / "predictions"
    showcase = Showcase(folder, 3, "/ckpt/model_epoch_004_step_40.pth", 0.3, 2,
                        (Picture(1, "a.jpg", folder / "val_1.png", 2, 2, 0.91),
                         Picture(2, "b.jpg", folder / "val_2.png", 1, 0, 0.12)))
    event = StudyClosed(digest, 272.4, pruner="median (warmup_epochs=2)", report=tmp_path / "report" / "report.html",
                        showcase=showcase, best_spec=tmp_path / "best_spec.yaml")
    buf = io.StringIO()
    ProgressBoard(Console(file=buf, width=300))(event)
    printed = buf.getvalue().splitlines()
    assert printed[0] == "automl done in 272 s: 9 trial(s), 4 complete, 4 pruned, 1 failed; 3 learned"
    assert printed[1].startswith("automl learned: #0, #3, #7 (val_mAP50 >= 0.375, halfway from the typical first")
    assert printed[2] == ("automl pruned 4 by median (warmup_epochs=2): 2 at epoch 2 (#1, #2 by not_learning); "
                          "2 at epoch 3 (#4, #8)")
    assert printed[3] == "automl failed: #6 CUDA out of memory at epoch 1 [red]x[/]"  # data, not markup
    assert printed[4] == "automl best: trial 3, val_mAP50 0.7400 (best epoch 4)"
    assert printed[5].startswith("automl importances: ")
    assert printed[6] == (f"automl pictures: {folder} (2 validation images, ground truth beside trial 3's "
                          "detections with score >= 0.30)")
    assert printed[7] == f"automl report: {tmp_path / 'report' / 'report.html'}"
    assert printed[8] == f"automl best spec: {tmp_path / 'best_spec.yaml'}"
    failed = StudyClosed(digest, 1.0, showcase=Showcase(folder, 3, "/c.pth", 0.3, 4, problem="the job failed"))
    assert ("no pictures: the job failed", "yellow") in closing_lines(failed)


def test_report_shows_the_pictures_and_says_when_they_are_of_another_trial(tmp_path):
    url, study = _mixed_study(tmp_path)
    out = tmp_path / "report"
    folder = out / "predictions"
    folder.mkdir(parents=True)
    for k in (1, 2):
        Image.new("RGB", (40, 20), (200, 10, 10)).save(folder / f"val_{k}.png")
    pictures = (Picture(1, "a.jpg", folder / "val_1.png", 2, 1, 0.9), Picture(2, "b.jpg", folder / "val_2.png", 1, 0,
                                                                             None))
    Showcase(folder, 3, "/ckpt/model_epoch_004_step_40.pth", 0.3, 2, pictures).save()
    page = write_report(url, "story", out).read_text()
    section = page.split("<h2>The best trial's detections on validation images</h2>")[1].split("<h2>")[0]
    assert '<img src="predictions/val_1.png"' in section and '<img src="predictions/val_2.png"' in section
    assert "image 1 (a.jpg): 2 annotated, 1 detected, highest score 0.90" in section
    assert "image 2 (b.jpg): 1 annotated, 0 detected</figcaption>" in section
    assert "no longer the best" not in section
    Showcase(folder, 0, "/ckpt/other.pth", 0.3, 2, pictures).save()
    page = write_report(url, "story", out).read_text()
    assert "These pictures are of trial #0, which is no longer the best (#3)" in page
    Showcase(folder, 3, "/c.pth", 0.3, 2, problem="dino inference failed (exit 2); see job/inference.log").save()
    page = write_report(url, "story", out).read_text()
    assert "No pictures: dino inference failed (exit 2); see job/inference.log." in page
