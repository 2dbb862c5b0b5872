"""Bounded memory at any month size: the streaming stages on months cut into many small chunks and
row groups (the sizes are shrunk so a test month of 12k rows takes the big-month code paths).

What must hold at every size: the same bytes from run to run (so a fresh clone's `dvc status` stays
clean), the same results as the whole-month code, and training on at most ``train.max_rows``.
The big months themselves are measured by ``python -m bench.scale``, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import core.io
import core.sources.synthetic
from core.io import file_sha256
from core.metrics import regression_metrics
from core.params import load_params
from tests.conftest import ROOT, run_stages

ROWS, CHUNK, GROUP, MAX_ROWS = 12_000, 5_000, 4_096, 6_000
OUTPUTS = [
    "data/raw/green_tripdata_2024-01.parquet",
    "data/raw/green_tripdata_2024-02.parquet",
    "data/features/train.parquet",
    "data/features/holdout.parquet",
    "data/features/current.parquet",
    "models/model.pkl",
    "models/model_card.json",
    "data/predictions/holdout.parquet",
    "data/predictions/current.parquet",
    "reports/metrics/evaluate.json",
    "reports/plots/error_by_hour.csv",
    "reports/plots/predicted_vs_actual.csv",
    "reports/metrics/drift.json",
    "reports/metrics/data_checks.json",
]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.sources.synthetic, "CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(core.io, "ROW_GROUP_ROWS", GROUP)
    monkeypatch.setattr(core.io, "BATCH_ROWS", GROUP // 2)


def _run(project: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    overrides = {
        "synthetic.rows_per_month": ROWS,
        "train.max_rows": MAX_ROWS,
        "train.hist_gradient_boosting.max_iter": 15,
        "drift.sample_rows": 3000,
    }
    return run_stages(project, monkeypatch, overrides)


@pytest.mark.slow
def test_big_month_code_paths_are_reproducible_exact_and_bounded(
    small_chunks: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _run(tmp_path / "a", monkeypatch)
    _run(tmp_path / "b", monkeypatch)
    for name in OUTPUTS:
        assert file_sha256(tmp_path / "a" / name) == file_sha256(tmp_path / "b" / name), name
    a = tmp_path / "a"

    # The generator wrote the month in chunks; every file is streamed in row groups of GROUP rows.
    raw = pq.ParquetFile(a / OUTPUTS[0])
    assert raw.num_row_groups >= 3 and raw.metadata.num_rows > CHUNK
    current = pq.ParquetFile(a / "data/features/current.parquet")
    assert (
        current.num_row_groups >= 2
        and max(current.metadata.row_group(i).num_rows for i in range(current.num_row_groups))
        <= GROUP + CHUNK
    )

    # Streaming gives what the whole-month code gives.
    from core.feature_tables import month_frame, split_holdout

    monkeypatch.chdir(a)
    params = load_params()
    window = month_frame("2024-01", params)
    train, holdout = split_holdout(window, params.split.holdout_fraction, params.split.seed)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "data/features/train.parquet"), train)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "data/features/holdout.parquet"), holdout)
    predictions = pd.read_parquet(a / "data/predictions/current.parquet")
    evaluation = json.loads((a / "reports/metrics/evaluate.json").read_text())
    assert evaluation["current"] == regression_metrics(
        predictions["duration_min"].to_numpy(), predictions["prediction"].to_numpy()
    )

    # The data checks, streamed row group by row group, count what one whole-month read counts.
    from core.data_checks import evaluate
    from core.month_profile import profile_tables

    whole = {
        m: profile_tables(m, [pq.read_table(a / f"data/raw/green_tripdata_{m}.parquet")], params.filters)
        for m in ("2024-01", "2024-02")
    }
    checks = json.loads((a / "reports/metrics/data_checks.json").read_text())
    assert checks == json.loads(json.dumps(evaluate(whole["2024-01"], whole["2024-02"], params.data_checks)))
    assert first["data_checks"] == checks

    # Training took the deterministic sample, and says so.
    card = json.loads((a / "models/model_card.json").read_text())
    assert card["training_rows"] == MAX_ROWS
    assert card["training_rows_available"] == len(train) > MAX_ROWS
    assert card["train_max_rows"] == MAX_ROWS

    # The drift stage's challenger: the same sample rule, the same estimate as in memory.
    from core.evaluation import load_trained_model
    from core.trigger import estimate_gain

    champion, _ = load_trained_model()
    in_memory = estimate_gain(
        champion, pd.read_parquet(a / "data/features/current.parquet"), params, "2024-02"
    )
    assert first["gain"] == in_memory
    assert in_memory["early_rows"] == MAX_ROWS


def test_sample_positions_are_deterministic_sorted_and_bounded() -> None:
    from core.training import sample_positions

    assert sample_positions(100, 100, 1) is None
    picked = sample_positions(10_000, 300, 42)
    assert picked is not None and len(picked) == 300 and len(set(picked)) == 300
    assert np.all(np.diff(picked) > 0) and picked[-1] < 10_000
    np.testing.assert_array_equal(picked, sample_positions(10_000, 300, 42))
    assert not np.array_equal(picked, sample_positions(10_000, 300, 43))


def test_generator_chunks_are_deterministic_and_a_small_month_is_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.params import SyntheticParams
    from core.sources.synthetic import generate_month, generate_month_chunks

    params = SyntheticParams(rows_per_month=3000)
    whole = generate_month("2024-03", params)
    assert [t.num_rows for t in generate_month_chunks("2024-03", params)] == [whole.num_rows]
    monkeypatch.setattr(core.sources.synthetic, "CHUNK_ROWS", 1000)
    chunks = list(generate_month_chunks("2024-03", params))
    assert len(chunks) >= 3 and max(t.num_rows for t in chunks) <= 1000
    assert sum(t.num_rows for t in chunks) == whole.num_rows
    assert all(a.equals(b) for a, b in zip(chunks, generate_month_chunks("2024-03", params), strict=True))


def test_scale_figures_are_rendered_from_their_results(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench scripts run as `python -m bench.X` from the root; import them the same way.
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.scale import render, render_docs

    assert render() == (ROOT / "bench/README.md").read_text(), "run `python -m bench.scale --render`"
    assert render_docs() == (ROOT / "docs/scale.md").read_text(), "run `python -m bench.scale --render`"
