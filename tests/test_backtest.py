"""The backtest: deterministic, no look-ahead, the yardsticks hold, clear errors, real data.

Small synthetic months (3000 rows) and few trees keep the whole file well under a minute and a
half; the months 2024-02..2024-07 straddle the synthetic regime shift (2024-05).
"""

from __future__ import annotations

import json
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from autoops.backtest import load_with_overrides, run_backtest
from autoops.backtest_data import LookAheadError, SourceMonths, Timeline
from autoops.backtest_hindsight import frontier, schedule_mae
from autoops.backtest_policy import BASELINE, parse_policies
from autoops.backtest_report import markdown
from autoops.cli import app
from core.artifacts.backtest import Backtest
from core.io import StageError
from core.months import month_range
from core.params import Params

ROOT = Path(__file__).resolve().parents[1]
MONTHS = month_range("2024-02", "2024-07")
SMALL = [
    "synthetic.rows_per_month=3000",
    "train.hist_gradient_boosting.max_iter=15",
    "drift.sample_rows=1000",
    "data.source=synthetic",
    "months.train_window=1",
]
POLICIES = ["static", "periodic", "data_drift", "performance", "auto"]


def small_params(*extra: str) -> Params:
    return load_with_overrides(ROOT / "params.yaml", [*SMALL, *extra])


def without_work(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "work"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backtest-cache")


@pytest.fixture(scope="module")
def clean(cache: Path) -> dict[str, Any]:
    return run_backtest(small_params(), MONTHS, POLICIES, cache_dir=cache, jobs=1)


def test_replay_is_deterministic_across_caches_and_workers(
    clean: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    # Fresh cache and two worker processes: the same figures, to the last digit.
    fresh = run_backtest(small_params(), MONTHS, POLICIES, cache_dir=tmp_path / "cache", jobs=2)
    assert without_work(fresh) == without_work(clean)
    assert fresh["work"]["fits"] > 0
    # Warm cache: nothing is fitted or scored again, and nothing changes.
    warm = run_backtest(small_params(), MONTHS, POLICIES, cache_dir=cache, jobs=1)
    assert without_work(warm) == without_work(clean)
    assert warm["work"] == {"fits": 0, "challenger_fits": 0, "scored": 0, "drift_checks": 0}


def test_yardsticks(clean: dict[str, Any]) -> None:
    summary = clean["summary"]
    calendar = {f"periodic_k{k}" for k in range(1, 7)}
    assert set(summary) == {"static", *calendar, "periodic", "data_drift", "performance", "auto"}
    # Degradation is measured against retraining every month: zero for it by definition.
    assert summary[BASELINE]["degradation"] == 0
    assert summary[BASELINE]["degradation_reduction"] == 1
    assert summary[BASELINE]["retrains"] == len(MONTHS) - 1
    assert summary["static"]["retrains"] == 0
    assert summary["static"]["degradation_reduction"] == 0
    # The regime shift hurts the model that never learns it, and the product's trigger notices.
    assert summary["static"]["degradation"] > 0.5
    assert summary["auto"]["degradation_reduction"] > 0.5
    assert summary["auto"]["retrains"] < summary[BASELINE]["retrains"]
    # Every month of every policy says which model served, its accuracy and why it did what it did.
    for rows in clean["policies"].values():
        assert [r["month"] for r in rows] == MONTHS
        assert rows[0]["bootstrap"] and rows[0]["model"] is None
        for row in rows[1:]:
            assert row["mae"] > 0 and row["rmse"] >= row["mae"] and row["reason"]
    shift = next(r for r in clean["policies"]["auto"] if r["month"] == "2024-05")
    assert shift["retrain"] and shift["reason"].startswith("retrain recommended: ")
    assert shift["expected_gain"] > 0.1  # the new regime's first weeks already beat the old model
    # The one-line verdict on the calendar is in the markdown report and the JSON.
    assert clean["versus_calendar"]["policy"] == "auto"


class CorruptAfterPrediction:
    """Serves the true months, except that ``month``'s labels are garbage once it is predicted.

    Reading those labels before the month was predicted is exactly the look-ahead under test: it
    fails the test at once instead of returning anything.
    """

    def __init__(self, inner: SourceMonths, month: str) -> None:
        self.inner, self.month = inner, month
        self.predicted = False
        self.label_reads: list[tuple[str, bool]] = []

    def key(self, month: str) -> str:
        # Different labels, different content: nothing cached from the clean run may be reused.
        return self.inner.key(month) + ("-corrupt" if month == self.month else "")

    def missing(self, months: list[str]) -> list[str]:
        return self.inner.missing(months)

    def features(self, month: str) -> pd.DataFrame:
        return self.inner.features(month)

    def labels(self, month: str) -> np.ndarray:
        self.label_reads.append((month, self.predicted))
        if month != self.month:
            return self.inner.labels(month)
        if not self.predicted:
            raise AssertionError(f"look-ahead: labels of {month} read before it was predicted")
        return self.inner.labels(month) * 3.0 + 25.0

    def on_predicted(self, month: str) -> None:
        if month == self.month:
            self.predicted = True


def test_no_look_ahead(clean: dict[str, Any], cache: Path) -> None:
    params = small_params()
    corrupt = "2024-04"
    data = CorruptAfterPrediction(SourceMonths(params, cache), corrupt)
    result = run_backtest(
        params, MONTHS, POLICIES, data=data, cache_dir=cache, jobs=1, on_predicted=data.on_predicted
    )
    assert (corrupt, True) in data.label_reads
    # The trigger's estimate at the corrupted month read its labels (after the month was predicted):
    # it changed there and only there.
    gains = {r["month"]: r.get("expected_gain") for r in result["policies"]["auto"]}
    clean_gains = {r["month"]: r.get("expected_gain") for r in clean["policies"]["auto"]}
    assert gains[corrupt] != clean_gains[corrupt]
    assert all(gains[m] == clean_gains[m] for m in gains if m < corrupt)
    at_prediction = ("month", "step", "model", "model_age", "reference_mae", "data_drift", "drifted_share")
    for name, rows in result["policies"].items():
        before = clean["policies"][name]
        for row, ref in zip(rows, before, strict=True):
            if row["month"] < corrupt:
                assert row == ref, f"{name} {row['month']} changed with labels of a later month"
            elif row["month"] == corrupt:
                # What was decided before the labels arrived is identical; the score is not.
                assert {k: row.get(k) for k in at_prediction} == {k: ref.get(k) for k in at_prediction}
                assert row["mae"] > ref["mae"] + 10
    # The labels were used after all: the model retrained on the corrupted month is another model.
    assert result["models"][corrupt]["reference_mae"] > 2 * clean["models"][corrupt]["reference_mae"]


def test_timeline_refuses_the_future(cache: Path) -> None:
    timeline = Timeline(SourceMonths(small_params(), cache))
    timeline.advance("2024-03")
    timeline.labels("2024-02")  # the past is fine
    timeline.features("2024-03")  # the present month's features are what the model predicts
    with pytest.raises(LookAheadError, match="before 2024-03 was predicted"):
        timeline.labels("2024-03")
    with pytest.raises(LookAheadError):
        timeline.features("2024-04")
    timeline.reveal("2024-03")
    timeline.labels("2024-03")
    with pytest.raises(LookAheadError):
        timeline.advance("2024-02")


def test_model_is_the_pipelines_model(
    clean: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backtest's "model trained on 2024-03" is the train stage's model with reference 2024-03."""
    from threadpoolctl import threadpool_limits

    from core.metrics import regression_metrics
    from core.model import predict
    from core.training import fit, read_features, xy
    from stages.featurize import featurize
    from stages.ingest import ingest

    params = small_params("months.reference=2024-03", "months.current=2024-04")
    monkeypatch.chdir(tmp_path)
    ingest(params, Path("data/raw"))
    featurize(params, Path("data/raw"), Path("data/features"))
    with threadpool_limits(1):
        model, _ = fit(params, read_features("train"))
        x, y = xy(read_features("holdout"))
        holdout_mae = regression_metrics(y, predict(model, x))["mae"]
    assert clean["models"]["2024-03"]["reference_mae"] == holdout_mae


def write_months(folder: Path, months: list[str]) -> None:
    from core.sources.synthetic import generate_month

    folder.mkdir(parents=True, exist_ok=True)
    synthetic = small_params().synthetic
    for month in months:
        pq.write_table(generate_month(month, synthetic), folder / f"green_tripdata_{month}.parquet")


def test_missing_month_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "tlc"
    write_months(folder, ["2024-01", "2024-02", "2024-04"])
    params = small_params("data.source=dir", f"data.dir={folder}")
    with pytest.raises(StageError) as info:
        run_backtest(params, ["2024-01", "2024-02", "2024-03", "2024-04"], cache_dir=tmp_path / "c", jobs=1)
    message = str(info.value)
    assert "month 2024-03 not available" in message
    assert "has: 2024-01, 2024-02, 2024-04" in message
    assert "--months 2024-01,2024-02,2024-04" in message

    # A training window reaching before the first month needs that history too.
    params = small_params("data.source=dir", f"data.dir={folder}", "months.train_window=2")
    with pytest.raises(StageError, match=r"2023-12 not available but needed by months.train_window=2"):
        run_backtest(params, ["2024-01", "2024-02"], cache_dir=tmp_path / "c", jobs=1)


def test_cli_range_gap_and_reports(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "tlc"
    write_months(folder, ["2024-02", "2024-03", "2024-05"])
    base = ["backtest", "--params", str(ROOT / "params.yaml"), "--quiet", "--jobs", "1"]
    sets = [arg for s in [*SMALL, f"backtest.cache_dir={tmp_path / 'cache'}"] for arg in ("--set", s)]
    out = tmp_path / "reports"

    gap = runner.invoke(app, [*base, *sets, "--source", "dir", "--set", f"data.dir={folder}",
                              "--from", "2024-02", "--to", "2024-05", "--out", str(out)])  # fmt: skip
    assert gap.exit_code == 1
    assert "month 2024-04 not available" in gap.output and "--months 2024-02,2024-03,2024-05" in gap.output
    assert not out.exists()

    ok = runner.invoke(app, [*base, *sets, "--source", "dir", "--set", f"data.dir={folder}",
                             "--months", "2024-02,2024-03,2024-05", "--policy", "auto",
                             "--out", str(out)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    result = json.loads((out / "backtest.json").read_text())
    assert result["months"] == ["2024-02", "2024-03", "2024-05"]
    calendar = [f"periodic_k{k}" for k in range(1, 7)]
    assert result["policy_order"] == ["static", *calendar, "auto"]
    assert set(result["summary"]) == {"static", *calendar, "auto"}
    assert result["settings"]["source"] == "dir"
    assert (out / "backtest.md").read_text().startswith("# Backtest: 2024-02 to 2024-05")
    assert (out / "backtest.png").read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(out / "plots" / "backtest_mae.csv")
    assert list(csv["month"]) == ["2024-03", "2024-05"]
    trade_off = pd.read_csv(out / "plots" / "backtest_frontier.csv")
    assert list(trade_off["policy"]) == [
        "static",
        *calendar,
        "auto",
        "hindsight_limit",
        "hindsight_limit",
        "hindsight_limit",
    ]
    assert list(trade_off["retrains"].tail(3)) == [0, 1, 2]
    assert "regret" in ok.output and "Hindsight limit" in (out / "backtest.md").read_text()

    bad = runner.invoke(app, [*base, "--months", "2024-02,2024-13"])
    assert bad.exit_code == 1 and "2024-13" in bad.output


def test_dvc_plot_matches_the_csv(clean: dict[str, Any]) -> None:
    """The columns dvc.yaml plots are the ones the default policies write."""
    from autoops.backtest_report import csv_table, frontier_table

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    entries = [spec for plot in dvc["plots"] for spec in plot.values() if "backtest" in json.dumps(spec)]
    report = Backtest.model_validate(clean)
    tables = {"reports/plots/backtest_mae.csv": csv_table(report), "reports/plots/backtest_frontier.csv":
              frontier_table(report)}  # fmt: skip
    assert sorted(path for e in entries for path in e["y"]) == sorted(tables)
    for entry in entries:
        ((path, columns),) = entry["y"].items()
        columns = columns if isinstance(columns, list) else [columns]
        assert set(columns) <= set(tables[path].columns)
        assert entry["x"] in tables[path].columns


def brute_force(months: list[str], mae: dict[str, dict[str, float]]) -> list[float]:
    """The best mean MAE with at most k retrains, k = 0..n-1, by trying every schedule."""
    steps = months[1:]  # a retrain is decided at every scored month, the last one included
    best = [min(schedule_mae(months, mae, c) for c in combinations(steps, k)) for k in range(len(steps) + 1)]
    return [min(best[: k + 1]) for k in range(len(best))]


def random_matrix(months: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Scores where a retrain sometimes helps a lot, sometimes hurts (a peculiar month's model)."""
    rng = np.random.default_rng(seed)
    return {
        m: {later: float(rng.uniform(2.0, 5.0)) for later in months[i + 1 :]}
        for i, m in enumerate(months[:-1])
    }


@pytest.mark.parametrize("seed", range(6))
def test_hindsight_frontier_is_the_best_schedule(seed: int) -> None:
    months = ["2023-01", "2023-02", "2023-12", "2024-01", "2024-03", "2024-04", "2024-07"]  # gaps, as real
    mae = random_matrix(months, seed)
    limit = frontier(months, mae)
    assert [p["retrains"] for p in limit] == list(range(len(months)))
    assert [p["mean_mae"] for p in limit] == pytest.approx(brute_force(months, mae), abs=1e-12)
    for point in limit:
        # The schedule given is one that reaches the figure, within the budget, and a retrain on
        # the last month (it would never serve) is never part of it.
        assert len(point["retrain_months"]) <= point["retrains"]
        assert months[-1] not in point["retrain_months"]
        assert schedule_mae(months, mae, point["retrain_months"]) == pytest.approx(
            point["mean_mae"], abs=1e-12
        )
    assert limit[0]["mean_mae"] == pytest.approx(np.mean([mae[months[0]][m] for m in months[1:]]))
    assert limit[-1]["mean_mae"] == limit[-2]["mean_mae"]  # the last month's retrain never serves


def test_hindsight_limit_of_retraining_always_helping() -> None:
    # The fresher the model, the better: retraining on every month that can serve is the best
    # schedule (every month served by a one-month-old model), and each retrain lowers the limit.
    months = month_range("2024-01", "2024-06")
    mae = {
        m: {later: 3.0 + 0.1 * (j - i) for j, later in enumerate(months) if j > i}
        for i, m in enumerate(months)
    }
    limit = [p["mean_mae"] for p in frontier(months, mae)]
    assert limit[0] == pytest.approx(3.3)  # static: ages 1..5
    assert limit[-2] == limit[-1] == pytest.approx(3.1)
    assert frontier(months, mae)[-1]["retrain_months"] == months[1:-1]
    assert all(a > b for a, b in pairwise(limit[:-1]))


def test_hindsight_matches_the_replay(clean: dict[str, Any]) -> None:
    """The matrix reproduces every policy's replayed MAE from its own retrain months: the timing the
    limit assumes is the replay's. So static is the k = 0 point, periodic_k1 the schedule that
    retrains on every month that can serve, and no policy is below the limit."""
    months, hindsight = clean["months"], clean["hindsight"]
    mae = hindsight["mae"]
    assert set(mae) == set(months[:-1])
    assert all(set(row) == set(months[i + 1 :]) for i, row in enumerate(mae.values()))
    for name, rows in clean["policies"].items():
        scored = [r for r in rows if not r.get("bootstrap")]
        retrained = [r["month"] for r in scored if r["retrain"]]
        assert schedule_mae(months, mae, retrained) == pytest.approx(
            np.mean([r["mae"] for r in scored]), abs=1e-12
        )
        regret = hindsight["regret"][name]
        assert regret["retrains"] == len(retrained)
        assert regret["regret"] >= 0, name
    summary, limit = clean["summary"], hindsight["frontier"]
    assert limit[0]["mean_mae"] == summary["static"]["mean_mae"]
    assert hindsight["regret"]["static"]["regret"] == 0
    assert schedule_mae(months, mae, months[1:-1]) == pytest.approx(
        np.mean([r["mae"] for r in clean["policies"][BASELINE][1:]]), abs=1e-12
    )
    assert limit[summary[BASELINE]["retrains"]]["mean_mae"] <= summary[BASELINE]["mean_mae"]
    text = markdown(Backtest.model_validate(clean))
    assert "**Hindsight limit:**" in text and "## The hindsight limit" in text


def test_bench_hindsight_figures_are_their_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/README.md's hindsight figures are what each stored result's own score matrix gives:
    the frontier, and `auto`'s regret from its retrain months (no figure is computed elsewhere)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.backtests import RESULTS, SEQUENCES

    for name in SEQUENCES:
        stored = json.loads((ROOT / RESULTS / f"backtest_{name}.json").read_text())
        months, limit = stored["months"], stored["hindsight"]
        mae = limit["mae"]
        assert limit["frontier"] == [
            {**p, "mean_mae": round(p["mean_mae"], 4)} for p in frontier(months, mae)
        ], name
        auto = limit["regret"]["auto"]
        retrained = [r["month"] for r in stored["trigger"] if r["retrain"]]
        assert auto["retrains"] == len(retrained) == stored["summary"]["auto"]["retrains"]
        assert auto["mean_mae"] == stored["summary"]["auto"]["mean_mae"]
        assert auto["mean_mae"] == round(schedule_mae(months, mae, retrained), 4)
        assert auto["limit_mae"] == limit["frontier"][auto["retrains"]]["mean_mae"]
        assert auto["regret"] >= 0
        assert abs(auto["regret"] - (auto["mean_mae"] - auto["limit_mae"])) < 2e-4  # three roundings


def test_policy_specs() -> None:
    names = [p.name for p in parse_policies(["auto", "periodic:6", "periodic"], periodic_every=3)]
    calendar = [f"periodic_k{k}" for k in range(1, 7)]
    assert names == ["static", *calendar, "auto", "periodic"]
    with pytest.raises(StageError, match="unknown policy"):
        parse_policies(["sometimes"], periodic_every=3)


@pytest.mark.realdata
def test_real_months_through_the_dir_source(real_dir: Path, tmp_path: Path) -> None:
    params = small_params("data.source=dir", f"data.dir={real_dir}")
    months = ["2021-01", "2021-02", "2022-01"]  # not contiguous, as the shared folder is
    result = run_backtest(params, months, ["auto"], cache_dir=tmp_path, jobs=1)
    rows = result["policies"]["auto"]
    assert [r["month"] for r in rows] == months
    assert all(2 < r["mae"] < 10 for r in rows[1:])
