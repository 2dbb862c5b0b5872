"""End to end: the real DVC pipeline on the embedded synthetic data, and drift on real months."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, PipelineRun, run_in, run_stages

STAGES = ["ingest", "featurize", "train", "evaluate", "drift"]


def _outs(lock_text: str) -> dict[str, str]:
    lock = yaml.safe_load(lock_text)
    return {
        out["path"]: out.get("md5", "") for stage in lock["stages"].values() for out in stage.get("outs", [])
    }


@pytest.mark.slow
def test_fresh_clone_reproduces_the_committed_lock(pipeline_run: PipelineRun) -> None:
    committed = (ROOT / "dvc.lock").read_text()
    project, first = pipeline_run.project, pipeline_run.repro
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    # Same inputs, same bytes: every output hash equals the committed lock, so a fresh clone's
    # run leaves `dvc status` clean and git sees no change to dvc.lock.
    assert _outs((project / "dvc.lock").read_text()) == _outs(committed)
    status = run_in(project, "dvc", "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout
    again = run_in(project, "dvc", "repro")
    assert again.returncode == 0
    assert "Running stage" not in again.stdout

    drift = json.loads((project / "reports/metrics/drift.json").read_text())
    assert {"drifted_share", "data_drift", "performance_drift", "retrain_recommended", "reason"} <= set(drift)
    assert (project / "reports/drift_report.html").stat().st_size > 10_000
    card = json.loads((project / "models/model_card.json").read_text())
    registry = json.loads((project / "models/registry.json").read_text())
    assert card["training_months"] == ["2024-01"] and registry["version"] == "1"
    summary = run_in(project, "autoops", "summary")
    assert summary.returncode == 0 and "MAE" in summary.stdout


@pytest.mark.realdata
@pytest.mark.slow
def test_consecutive_real_months_do_not_drift(
    real_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consecutive real months are real data: the data checks pass, and nothing drifts. (Months
    years apart do drift: tests/test_loop_e2e.py's real breach checks that verdict in full.)"""
    overrides = {"data.source": "dir", "data.dir": str(real_dir)}
    result = run_stages(
        tmp_path, monkeypatch, {**overrides, "months.reference": "2023-01", "months.current": "2023-02"}
    )
    assert result["data_drift"] is False and result["retrain_recommended"] is False, result["reason"]
    assert result["data_checks"]["passed"] and result["data_problem"] is None
    assert result["drifted_share"] < 0.5
