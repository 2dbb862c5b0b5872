"""Ingest: every TLC schema era normalises; bad input fails with one clear line and writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.schema import CANONICAL_SCHEMA, SchemaError, normalize
from tests.conftest import ROOT, set_params

REAL_MONTHS = ["2021-01", "2021-02", "2022-01", "2023-01", "2023-02", "2025-01"]


@pytest.mark.realdata
@pytest.mark.parametrize("month", REAL_MONTHS)
def test_every_real_month_normalises(real_dir: Path, month: str) -> None:
    raw = pq.read_table(real_dir / f"green_tripdata_{month}.parquet")
    table = normalize(raw, source=month)
    assert table.schema == CANONICAL_SCHEMA
    assert table.num_rows == raw.num_rows
    # Old-era float NaN ids become nulls, not garbage integers.
    assert table.column("passenger_count").null_count == raw.column("passenger_count").null_count
    fee = table.column("cbd_congestion_fee")
    assert (fee.null_count == table.num_rows) == (month < "2025-01")


def test_missing_required_column_is_named() -> None:
    table = pa.table({"lpep_dropoff_datetime": pa.array([0], pa.timestamp("us")), "PULocationID": [1]})
    with pytest.raises(SchemaError, match=r"f\.parquet: missing required column\(s\) lpep_pickup_datetime"):
        normalize(table, source="f.parquet")


def _write_month(folder: Path, month: str, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"green_tripdata_{month}.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of an in-process stage run: all the ingest stage reads is params.yaml."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.chdir(project)
    # run_stage sets these for the process (setdefault); set here, they are undone after the test.
    telemetry = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    for name, value in {**telemetry, "DVC_NO_ANALYTICS": "1", "GIT_PYTHON_REFRESH": "quiet"}.items():
        monkeypatch.setenv(name, value)
    return project


def _run_ingest(capsys: pytest.CaptureFixture[str]) -> str:
    """`python -m stages.ingest`, in this process: exit status 1 and its stderr."""
    from core.runner import run_stage
    from stages.ingest import main

    with pytest.raises(SystemExit) as exited:
        run_stage("ingest", main)
    assert exited.value.code == 1
    return capsys.readouterr().err


def _tiny_month(rows: int = 50) -> pa.Table:
    start = 1_704_067_200_000_000  # 2024-01-01 in microseconds
    pickups = [start + i * 60_000_000 for i in range(rows)]
    return pa.table(
        {
            "VendorID": pa.array([2] * rows, pa.int32()),
            "lpep_pickup_datetime": pa.array(pickups, pa.timestamp("us")),
            "lpep_dropoff_datetime": pa.array([p + 600_000_000 for p in pickups], pa.timestamp("us")),
            "PULocationID": pa.array([74] * rows, pa.int32()),
            "DOLocationID": pa.array([75] * rows, pa.int32()),
            "trip_distance": [1.5] * rows,
        }
    )


def _ingest_with_bad_month(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], table_or_bytes: pa.Table | bytes
) -> tuple[str, Path]:
    folder = tmp_path / "tlc"
    _write_month(folder, "2024-01", _tiny_month())
    bad = folder / "green_tripdata_2024-02.parquet"
    if isinstance(table_or_bytes, bytes):
        bad.write_bytes(table_or_bytes)
    else:
        _write_month(folder, "2024-02", table_or_bytes)
    set_params(project, **{"data.source": "dir", "data.dir": str(folder)})
    stderr = _run_ingest(capsys)
    error_lines = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(error_lines) == 1, stderr
    # Nothing half-written: the output folder was never published, and no temp folder is left.
    assert not (project / "data" / "raw").exists()
    assert not list(project.glob("data/.raw*"))
    return error_lines[0], bad


def test_truncated_parquet_fails_cleanly(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(_tiny_month(), good)
    data = good.read_bytes()
    line, bad = _ingest_with_bad_month(project, tmp_path, capsys, data[: len(data) // 2])
    assert str(bad) in line and "truncated or corrupt" in line


def test_missing_pickup_column_fails_cleanly(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line, bad = _ingest_with_bad_month(
        project, tmp_path, capsys, _tiny_month().drop_columns(["lpep_pickup_datetime"])
    )
    assert str(bad) in line and "lpep_pickup_datetime" in line


def test_empty_month_fails_cleanly(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line, bad = _ingest_with_bad_month(project, tmp_path, capsys, _tiny_month().slice(0, 0))
    assert str(bad) in line and "empty" in line


def test_invalid_month_in_params_fails_cleanly(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_params(project, **{"months.current": "2023-13"})
    stderr = _run_ingest(capsys)
    assert "months.current" in stderr and "2023-13" in stderr
    assert not (project / "data" / "raw").exists()


def test_unreachable_tlc_host_fails_cleanly(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_params(
        project,
        **{
            "data.source": "tlc",
            # A closed port on loopback: connection refused, as when the network is down.
            "data.tlc_url": "http://127.0.0.1:9/trip-data/green_tripdata_{month}.parquet",
            "data.retries": 0,
            "data.timeout_s": 2,
        },
    )
    line = next(x for x in _run_ingest(capsys).splitlines() if x.startswith("error"))
    assert "cannot download" in line and "synthetic" in line
    assert not (project / "data" / "raw").exists()
    assert not list(project.glob(".cache/**/*.parquet")) and not list(project.glob(".cache/**/.*.tmp"))
