"""The MLflow UI, in a real headless Chromium, shows what a comparison recorded.

Needs Debian's `chromium` (installed by .ci/run) and the `playwright` Python package, which
drives that browser; nothing downloads a browser. Skips where either is missing.
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

from tests.conftest import mlflow_runs, run_entry
from tests.servers import free_port, wait_for_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
# Without these, Chromium keeps reaching for Google's services, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


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
        wait_for_http(f"{url}/health", server, timeout=90)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ui_shows_the_comparison(tiny_mnist: Path, store: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    done = run_entry("src.train", "+experiment=compare", f"data.root={tiny_mnist}",
                     "data.val_size=100", "trainer.max_epochs=1", "compare.seeds=[0,1]",
                     store=store)
    assert done.returncode == 0, done.stderr
    runs = mlflow_runs(store)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    child = next(r for r in runs if r.data.tags.get("arm") == "beta_0.1_0.1")
    experiment = parent.info.experiment_id
    shots = Path(os.environ.get("MLFLOW_UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with _server(store) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        # The experiment: one parent row; its children fold out under it.
        page.goto(f"{url}/#/experiments/{experiment}/runs")
        name_cell = page.locator(".ag-cell-value", has=page.locator(
            f'a[href$="/runs/{parent.info.run_id}"]'))
        name_cell.wait_for(timeout=60_000)
        assert page.get_by_text("5 matching runs").is_visible()
        name_cell.locator("button").first.click()
        for arm in ("beta_0.9_0.999", "beta_0.1_0.1"):
            for seed in (0, 1):
                page.get_by_text(f"{arm}/seed={seed}", exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "mlflow-ui-runs.png"))

        # A child run: its β params.
        page.goto(f"{url}/#/experiments/{experiment}/runs/{child.info.run_id}")
        name = page.get_by_text("optimizer.betas", exact=True).first
        name.wait_for(timeout=30_000)
        row = name.locator("xpath=ancestor::*[@role='row'][1]")
        assert row.inner_text().split() == ["optimizer.betas", "[0.1,", "0.1]"]
        page.screenshot(path=str(shots / "mlflow-ui-child.png"))

        # The parent's report: the figure renders as an image.
        page.goto(f"{url}/#/experiments/{experiment}/runs/{parent.info.run_id}"
                  "/artifacts/report/curves.png")
        figure = page.locator("img[src^='blob:']").first
        figure.wait_for(timeout=30_000)
        size = figure.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size[0] > 500 and size[1] > 200
        page.screenshot(path=str(shots / "mlflow-ui-report.png"))
        browser.close()
    for name in ("runs", "child", "report"):
        assert (shots / f"mlflow-ui-{name}.png").stat().st_size > 10_000
    assert MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_run(
        parent.info.run_id).info.status == "FINISHED"
