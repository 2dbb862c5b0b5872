"""What people open in a browser, opened by a browser: headless Chromium (the system's) with the
network limited to loopback, so a page that needs the internet fails here (see tests/browser.py).

- the service's /docs lists every operation and "Try it out" on /predict returns a prediction;
- the drift report from a fresh clone's `dvc repro` draws its drift table;
- `dvc plots show`'s page draws every plot with no remote script;
- the backtest's and the PR report's PNGs load.

Each test saves a full-page screenshot in its temp folder (`python -m tests.browser` makes them on
demand). Skipped where there is no Chromium (`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest

from serve.testing import ServerProcess, sklearn_server_env, small_model_dir
from tests import browser as pages
from tests.conftest import ROOT, PipelineRun

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = pages.find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with pages.launch(CHROMIUM) as launched:
        yield launched


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("docs")
    env = sklearn_server_env(small_model_dir(work, seed=1), AUTOOPS_PREDICTION_LOG="off")
    with ServerProcess(cwd=work, env=env, args=("--workers", "1")) as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(pipeline_run: PipelineRun) -> Path:
    assert pipeline_run.repro.returncode == 0, pipeline_run.repro.stdout + pipeline_run.repro.stderr
    return pipeline_run.project


def test_docs_show_every_operation_and_try_it_out_predicts(
    browser: Browser, service: ServerProcess, tmp_path: Path
) -> None:
    answer = pages.docs_page(browser, service.url, tmp_path / "docs.png")
    # What the page showed is what the service answers for the same trip.
    direct = httpx.post(f"{service.url}/predict", json=pages.TRIP, timeout=30).json()
    assert answer == direct


def test_drift_report_draws_its_drift_table(browser: Browser, pipeline: Path, tmp_path: Path) -> None:
    report = pipeline / "reports" / "drift_report.html"
    assert not pages.remote_references(report.read_text(encoding="utf-8"))
    drift = json.loads((pipeline / "reports" / "metrics" / "drift.json").read_text())
    pages.drift_report_page(browser, report, drift, tmp_path / "drift_report.png")


def test_dvc_plots_draw_every_plot_offline(browser: Browser, pipeline: Path, tmp_path: Path) -> None:
    # The fresh clone's config: the offline template comes from the repository, not this machine.
    index = pages.plots_page(browser, pipeline, tmp_path / "dvc_plots", tmp_path / "dvc_plots.png")
    assert "plots_offline.html" in (pipeline / ".dvc" / "config").read_text()
    assert "cdn.jsdelivr.net" not in index.read_text(encoding="utf-8")


def _pr_report_plots(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The PR report's PNGs, drawn by autoops.evidence from small made-up predictions (and the
    example PR's drift and comparison, docs/example_pr_report/)."""
    from autoops import evidence, evidence_plots
    from core.artifacts.comparison import Comparison
    from core.artifacts.drift import Drift
    from core.evaluation import PREDICTION
    from core.features import TARGET

    rng = np.random.default_rng(0)
    actual = rng.gamma(3.0, 5.0, 500)
    scored = pd.DataFrame(
        {
            "pickup_hour": rng.integers(0, 24, 500),
            TARGET: actual,
            "champion": actual * 1.3 + rng.normal(0, 3, 500),
            "challenger": actual + rng.normal(0, 2, 500),
        }
    )
    example = ROOT / "docs" / "example_pr_report"
    comparison = Comparison.read(example / "comparison.json")
    trigger = {"holdout": scored.assign(**{PREDICTION: scored["champion"] * 0.8}), "current": scored}
    monkeypatch.chdir(folder)  # evidence writes to reports/loop/ under the working directory
    evidence.write_evidence(comparison, scored, Drift.read(example / "drift.json"), trigger)
    return [path for _, path in evidence_plots.render_plots(folder / evidence.LOOP_DIR)]


def test_report_pngs_load(browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = tmp_path / "images"
    shown.mkdir()
    backtest = shown / "backtest.png"
    if (ROOT / "reports" / "backtest.png").exists():
        shutil.copyfile(ROOT / "reports" / "backtest.png", backtest)
    else:
        from autoops.backtest_report import plot_png

        plot_png(json.loads((ROOT / "reports" / "backtest.json").read_text()), backtest)
    pngs = [backtest, *_pr_report_plots(shown, monkeypatch)]
    assert len(pngs) == 4
    pages.images_page(browser, shown, pngs, "Backtest and PR report", tmp_path / "report_images.png")
