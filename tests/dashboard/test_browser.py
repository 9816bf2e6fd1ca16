"""optuna-dashboard in real headless Chromium (Debian's, driven by Playwright).

Asserts what a user watching a study sees: the study, the trials in every state, the
per-epoch intermediate-values chart (updating live while a trial runs), and a failed
trial's diagnosis and artifacts. Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import time

import optuna
import pytest

# a hung browser or server must fail the test, not the CI job (runs in ~20 s on an idle box)
pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

sync_api = pytest.importorskip("playwright.sync_api")

CHART = "#graph-intermediate-values"


def _trace_points(page, legend: str) -> int:
    """Number of plotted points of the chart trace whose legend reads ``legend``."""
    legends = [t.strip() for t in page.locator(f"{CHART} .legendtext").all_text_contents()]
    index = legends.index(legend)
    return page.locator(f"{CHART} .scatterlayer .trace").nth(index).locator("path.point").count()


def test_dashboard_in_chromium(chromium_launch, study_fixture, dashboard, tmp_path):
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # study list
            page.goto(dashboard.url)
            link = page.get_by_text(study_fixture.study_name)
            link.wait_for()
            assert "Direction: MAXIMIZE" in page.inner_text("body")
            link.click()

            # study page: the per-epoch chart with every trial that reported epochs
            page.get_by_role("heading", name="Intermediate values").wait_for()
            page.locator(f"{CHART} .legendtext").nth(4).wait_for()
            legends = [t.strip() for t in page.locator(f"{CHART} .legendtext").all_text_contents()]
            assert legends == ["trial #0", "trial #1", "trial #2", "trial #3", "trial #5 (running)"]
            assert _trace_points(page, "trial #2") == 3  # pruned after 3 epochs
            assert _trace_points(page, "trial #1") == 5
            body = page.inner_text("body")
            assert f"{study_fixture.study_name} (id=" in body
            assert "Best Trial (number=1)" in body and "0.52" in body

            # live: the running trial reports another epoch; the page picks it up by polling
            storage = optuna.storages.RDBStorage(study_fixture.storage_url)
            study = optuna.load_study(study_name=study_fixture.study_name, storage=storage)
            running = study.trials[5]
            storage.set_trial_intermediate_value(running._trial_id, 2, 0.31)
            storage.engine.dispose()
            deadline = time.monotonic() + 25
            while _trace_points(page, "trial #5 (running)") < 3:
                assert time.monotonic() < deadline, "new epoch never showed up in the chart"
                page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "dashboard_study.png"), full_page=True)

            # trial list: all states, and the failed trial's diagnosis and artifacts
            page.get_by_role("link", name="Trials (List)").click()
            page.get_by_text("Trial 4", exact=True).click()
            page.get_by_text("failure_fix reduce dataset.batch_size (now 8)").wait_for()
            body = page.inner_text("body")
            for state in ("Complete", "Pruned", "Fail", "Running"):
                assert f"\n{state}\n" in body, state
            assert "Trial 4 (trial_id=" in body
            assert "failure CUDA out of memory at epoch 1" in body
            assert "device cuda:0" in body and "job_id pid-4004" in body
            spec_link = page.locator('a[aria-label="download artifact"][download="spec.yaml"]')
            assert page.locator(
                'a[aria-label="download artifact"][download="log_tail.log"]'
            ).count() == 1
            href = spec_link.get_attribute("href")  # relative: /artifacts/<study>/<trial>/<id>
            served = page.request.get(f"http://127.0.0.1:{dashboard.port}{href}").text()
            assert served == open(study.trials[4].user_attrs["spec_path"]).read()
            page.screenshot(path=str(tmp_path / "dashboard_failed_trial.png"), full_page=True)
        finally:
            browser.close()
    assert errors == [], errors
    for name in ("dashboard_study.png", "dashboard_failed_trial.png"):
        assert (tmp_path / name).stat().st_size > 50_000


def test_dashboard_screenshot_command(
    chromium_launch, study_fixture, tmp_path, capsys, monkeypatch
):
    """`automl dashboard --screenshot`: how the README's picture of a real study is made."""
    from PIL import Image

    from automl.cli import main

    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    png = tmp_path / "shot" / "dashboard.png"
    argv = ["dashboard", "--workspace", str(study_fixture.workspace), "--screenshot", str(png)]
    assert main(argv) == 0
    assert f"screenshot of study 'dino-smoke-test': {png}" in capsys.readouterr().out
    width, height = Image.open(png).size
    assert width == 1400 and height > 1500  # the whole study page, charts included
    assert png.stat().st_size > 50_000
