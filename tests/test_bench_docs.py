"""The model-quality, backtest, trigger-study and serving figures in bench/README.md are exactly
what their committed results render.

Nothing is re-run here (that takes minutes): the committed JSON under bench/results/ is rendered
and compared with the committed text, so a figure copied or edited by hand fails the suite.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench scripts run as `python -m bench.X` from the root; import them the same way.
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(os.fspath(ROOT))


def test_backtest_table_matches_its_results() -> None:
    from bench.backtests import RESULTS, SEQUENCES, render

    assert any((RESULTS / f"backtest_{name}.json").exists() for name in SEQUENCES)
    assert render() == (ROOT / "bench/README.md").read_text(), "run `python -m bench.backtests --render`"


def test_trigger_study_table_matches_its_results() -> None:
    from bench.trigger_study import OUT_DIR, render

    assert list(OUT_DIR.glob("trigger_study_*.json"))
    assert render() == (ROOT / "bench/README.md").read_text(), "run `python -m bench.trigger_study --render`"


def test_model_quality_table_matches_its_results() -> None:
    from bench.model_quality import BEGIN, END, RESULTS, render

    assert RESULTS.exists()
    text = (ROOT / "bench/README.md").read_text()
    assert render() == text, "run `python -m bench.model_quality --render`"
    # Nothing outside the block states a figure of the benchmark's own: they all come from RESULTS.
    outside = text.split(BEGIN, 1)[0] + text.split(END, 1)[1].split("## Backtest", 1)[0]
    results = json.loads(RESULTS.read_text())
    for model in results["models"]:
        for key in ("rmse", "mae", "r2"):
            assert f"{model[key]:.3f}" not in outside, (model["name"], key)
    assert str(results["targets"]["rmse"]) not in outside


def test_the_example_pr_report_is_what_its_evidence_renders() -> None:
    """docs/example_pr_report.md is a report `autoops propose` wrote in a real run
    (python -m bench.example_report): its sections render again, byte for byte, from the evidence
    committed beside it, so the intervals and the who-loses table carry no figure typed by hand."""
    from autoops.evidence_report import _comparison_lines, _drift_lines, _proposal_lines, who_loses_lines
    from bench.example_report import DOC, EVIDENCE
    from core.artifacts.comparison import Comparison
    from core.artifacts.drift import Drift

    text = (ROOT / DOC).read_text()
    drift = Drift.read(ROOT / EVIDENCE / "drift.json")
    comparison = Comparison.read(ROOT / EVIDENCE / "comparison.json")
    head = text.split("\n---\n", 1)[0]
    assert "python -m bench.example_report" in head, "the header names the command that regenerates it"
    for lines in (
        _proposal_lines(drift, comparison, "main"),
        _comparison_lines(comparison, "main"),
        _drift_lines(drift),
    ):
        assert "\n".join(lines) in text, "run `python -m bench.example_report`"
    # The evidence a reviewer weighs: both intervals and the who-loses table, segments it loses first.
    from core.trigger import gain_sentence

    assert drift.gain and drift.gain.expected_gain_ci95 and "95% CI" in gain_sentence(drift.gain.as_dict())
    assert comparison.change.mae_relative_ci95 and "\n".join(who_loses_lines(comparison)) in text
    worse = [s.challenger_worse for s in comparison.segments]
    assert worse == sorted(worse, reverse=True)
    for image in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (ROOT / DOC.parent / image).is_file(), image


def test_the_verdict_says_dominates_only_when_no_calendar_beats_it() -> None:
    from autoops.backtest_report import verdict_line, versus_calendar
    from core.artifacts.backtest import Backtest
    from core.paths import BACKTEST_RESULT

    def policy(mae: float, retrains: int) -> dict:
        return {
            "description": "",
            "mean_mae": mae,
            "mean_rmse": mae,
            "degradation": 0.0,
            "degradation_reduction": None,
            "retrains": retrains,
            "retrain_months": [],
        }

    def result_of(summary: dict[str, dict]) -> Backtest:
        # The committed backtest with this summary and its verdict (verdict_line reads only those).
        fields = {"summary": summary, "versus_calendar": versus_calendar(summary)}
        return Backtest.model_validate({**Backtest.read(ROOT / BACKTEST_RESULT).as_dict(), **fields})

    summary = {f"periodic_k{k}": policy(3.0 + 0.01 * k, 12 // k) for k in range(1, 7)}
    summary["auto"] = policy(3.015, 4)  # better than K=3 (4 retrains): dominates
    result = result_of(summary)
    assert result.versus_calendar and result.versus_calendar.dominates_calendar
    assert verdict_line(result).startswith("**`auto` dominates the calendar**")
    summary["auto"] = policy(3.035, 4)  # K=3 has 4 retrains and a lower MAE: beaten
    result = result_of(summary)
    assert result.versus_calendar and result.versus_calendar.beaten_by == ["periodic_k3"]
    assert "does not dominate" in verdict_line(result)


def test_serving_figures_match_their_results() -> None:
    """The serving block is the summary (bench/serve_report.py) of bench/results/serve.json."""
    from bench.serve_report import README_BEGIN, README_END, earlier_runs, loaded_run, summary

    results = json.loads((ROOT / "bench/results/serve.json").read_text())
    text = (ROOT / "bench/README.md").read_text()
    block = text[text.index(README_BEGIN) + len(README_BEGIN) : text.index(README_END)]
    latest = ROOT / "bench/results/serve.json"
    expected = summary(results, earlier_runs(latest), loaded_run(latest))
    assert block.strip() == expected.strip(), "run bench/serve_bench.py (it rewrites the block)"


def test_data_checks_table_matches_its_results() -> None:
    """The data checks' calibration (bench/data_checks.py): clean real pairs pass, every fault fails."""
    from bench.data_checks import RESULTS, render

    assert render() == (ROOT / "bench/README.md").read_text(), "run `python -m bench.data_checks --render`"
    results = json.loads(RESULTS.read_text())
    assert results["pairs"] > 100 and not results["clean_pairs_failing"]
    for fault in results["faults"]["results"].values():
        assert fault["expected"] in fault["blocking"]
    assert not any(change["blocking"] for change in results["real_changes"].values())
