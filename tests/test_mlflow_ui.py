"""The MLflow UI, in a real headless Chromium, shows what a comparison and a study recorded.

Needs Debian's `chromium` (installed by .ci/run) and the `playwright` Python package, which
drives that browser; nothing downloads a browser. Skips where either is missing.

The walk is a user's: the home page, a click on the experiment, its runs with the children
folded under the parent, a click on a child for its β. MLflow 3.17's UI starts in its GenAI
view and keeps the sidebar's "GenAI / Model training" switch per browser (localStorage): the
experiments' `mlflow.experimentKind=custom_model_development` tag (src.tracking) marks them as
model training, but this UI version routes by the switch alone. So the browser makes that
choice once, as a user does once, and nothing is switched after it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from src.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING
from tests.conftest import mlflow_runs, run_entry
from tests.servers import free_port, wait_for_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
# Without these, Chromium keeps reaching for Google's services, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TINY = ("data.val_size=100", "trainer.max_epochs=1", "data.download=false")
WAIT_MS = 60_000  # the UI is a large single-page app; a busy machine needs a while


@contextmanager
def _server(store: Path) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1 and a free port against `store`, until the block ends."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
         f"sqlite:///{store / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, timeout=180)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _choose_model_training(page, url: str) -> None:
    """The sidebar's switch, clicked once on the home page; the browser keeps the choice."""
    page.goto(f"{url}/#/")
    page.get_by_role("button", name="Model training", exact=True).click(timeout=WAIT_MS)
    stored = page.evaluate("() => localStorage.getItem('mlflow.workflowType_v1')")
    assert stored == '"machine_learning"', stored


def _close_assistant(page) -> None:
    """MLflow 3.17 opens its assistant panel on a first visit; it would cover the screenshots."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def _open_from_home(page, url: str, experiment: str, parent_run_id: str):
    """Home page → click the experiment → its runs table with the parent's row; that row."""
    page.goto(f"{url}/#/")
    page.get_by_role("link", name=experiment, exact=True).first.click(timeout=WAIT_MS)
    row = page.locator(".ag-cell-value", has=page.locator(f'a[href$="/runs/{parent_run_id}"]'))
    row.wait_for(timeout=WAIT_MS)
    assert "/runs" in page.url and "workflowType=genai" not in page.url, page.url
    _close_assistant(page)
    return row


def _in_model_training_view(page) -> bool:
    # The GenAI sidebar groups its pages under "Observability" and "Evaluation"; the model
    # training sidebar lists Runs, Models, Traces.
    return (page.get_by_text("Observability", exact=True).count() == 0
            and page.get_by_text("Runs", exact=True).first.is_visible())


def test_ui_opens_the_comparison_and_the_study_on_their_runs(tiny_mnist: Path, store: Path,
                                                             tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    done = run_entry("src.train", "+experiment=compare", f"data.root={tiny_mnist}", *TINY,
                     "compare.seeds=[0,1]", store=store)
    assert done.returncode == 0, done.stderr
    studied = run_entry("pipelines.study", f"data.root={tiny_mnist}", *TINY, "study.name=ui",
                        "study.n_trials=2", "study.workers=1", "study.sampler.name=random",
                        f"study.storage=sqlite:///{tmp_path}/optuna.db",
                        f"study.export_dir={tmp_path}/experiment", store=store)
    assert studied.returncode == 0, studied.stderr
    runs = mlflow_runs(store)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    for name in ("compare", "study-ui"):
        tags = client.get_experiment_by_name(name).tags
        assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING, (name, tags)
    parent = next(r for r in runs if r.data.tags.get("pipeline") == "compare")
    child = next(r for r in runs if r.data.tags.get("arm") == "beta_0.1_0.1")
    study = next(r for r in runs if r.data.tags.get("pipeline") == "study")
    shots = Path(os.environ.get("MLFLOW_UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with _server(store) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _choose_model_training(page, url)

        # The comparison: one parent row, its four children fold out under it.
        name_cell = _open_from_home(page, url, "compare", parent.info.run_id)
        assert page.get_by_text("5 matching runs").is_visible()
        name_cell.locator("button").first.click()
        for arm in ("beta_0.9_0.999", "beta_0.1_0.1"):
            for seed in (0, 1):
                page.get_by_text(f"{arm}/seed={seed}", exact=True).wait_for(timeout=WAIT_MS)
        assert _in_model_training_view(page)
        page.screenshot(path=str(shots / "mlflow-ui-runs.png"))

        # A click on a child: its β among the params, still in the model-training view.
        page.get_by_role("link", name="beta_0.1_0.1/seed=1", exact=True).click()
        name = page.get_by_text("optimizer.betas", exact=True).first
        name.wait_for(timeout=WAIT_MS)
        assert child.info.run_id in page.url or "beta_0.1_0.1/seed=1" in page.inner_text("body")
        row = name.locator("xpath=ancestor::*[@role='row'][1]")
        assert row.inner_text().split() == ["optimizer.betas", "[0.1,", "0.1]"]
        assert _in_model_training_view(page)
        row.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "mlflow-ui-child.png"))

        # The parent's report: the figure renders as an image.
        page.goto(f"{url}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
                  "/artifacts/report/curves.png")
        figure = page.locator("img[src^='blob:']").first
        figure.wait_for(timeout=WAIT_MS)
        size = figure.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size[0] > 500 and size[1] > 200
        page.screenshot(path=str(shots / "mlflow-ui-report.png"))

        # The study: its parent run (named by the study) with the trials under it.
        name_cell = _open_from_home(page, url, "study-ui", study.info.run_id)
        name_cell.locator("button").first.click()
        for trial in (0, 1):
            page.get_by_text(f"trial {trial}", exact=True).wait_for(timeout=WAIT_MS)
        assert _in_model_training_view(page)
        page.screenshot(path=str(shots / "mlflow-ui-study.png"))
        browser.close()
    for name in ("runs", "child", "report", "study"):
        assert (shots / f"mlflow-ui-{name}.png").stat().st_size > 10_000
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
