"""core/sources: one interface, chosen in one place; a new source plugs in with no other edit."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoops import sources as loop_sources
from autoops.backtest_data import SourceMonths
from autoops.gitops import LoopError
from core.io import StageError
from core.months import month_index
from core.params import DataParams, ParamsError, load_params
from core.schema import CANONICAL_SCHEMA
from core.sources import SOURCES, DataSource, UnpublishedError, source_for
from core.sources.dir import DirSource
from core.sources.files import months_in
from tests.conftest import ROOT, set_params

MONTH = "2024-01"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding only params.yaml: all the ingest stage reads."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.chdir(project)
    return project


def test_a_source_registered_in_a_test_drives_ingest_the_loop_and_the_backtest(
    project: Path, real_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source written as a new one would be (here: real months read whole, as a warehouse table
    would arrive), added with one registry line and selected in params.yaml, nothing else."""
    from stages.ingest import ingest

    class SharedMonths(DataSource):
        name = "shared-months"

        def chunks(self, month: str) -> tuple[Iterator[pa.Table], str]:
            path = real_dir / f"green_tripdata_{month}.parquet"
            return iter([pq.read_table(path)]), f"shared month {month}"

        def identity(self, month: str) -> dict[str, Any]:
            return {"source": self.name, "month": month}

        def latest(self, this_month: str) -> str:
            return [m for m in months_in(real_dir) if month_index(m) <= month_index(this_month)][-1]

    monkeypatch.setitem(SOURCES, SharedMonths.name, SharedMonths)
    # 2023-01 is TLC's old float-coded era, 2023-02 the new one: the canonical schema is applied
    # to the new source's months without it doing anything for it.
    months = {"months.reference": "2023-01", "months.current": "2023-02", "months.train_window": 1}
    set_params(project, **{"data.source": "shared-months", **months})
    written = ingest(load_params())

    set_params(project, **{"data.source": "dir", "data.dir": str(real_dir)})
    expected = ingest(load_params(), project / "from_dir")
    assert (
        [p.name for p in written]
        == [p.name for p in expected]
        == [
            "green_tripdata_2023-01.parquet",
            "green_tripdata_2023-02.parquet",
        ]
    )
    for ours, theirs in zip(written, expected, strict=True):
        table = pq.read_table(ours)
        assert table.schema == CANONICAL_SCHEMA
        assert table.equals(pq.read_table(theirs)), ours.name

    set_params(project, **{"data.source": "shared-months"})
    params = load_params()
    assert loop_sources.latest_month(project, params, date(2023, 6, 1)) == "2023-02"
    with pytest.raises(LoopError, match="2023-03 is not published yet: the newest shared-months"):
        loop_sources.ensure_published(project, params, "2023-03", date(2023, 6, 1))
    data = SourceMonths(params, None)
    assert data.where == "data.source: shared-months"
    assert data.missing(["2023-01", "2023-03"]) == []  # it cannot list its months: none known missing


def test_an_unknown_source_is_one_line_naming_the_known_ones(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.runner import run_stage
    from stages.ingest import main

    set_params(project, **{"data.source": "warehouse"})
    with pytest.raises(SystemExit) as exited:
        run_stage("ingest", main)
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error [ingest]: data.source: unknown source 'warehouse' (known: dir, synthetic, tlc)"]
    assert not (project / "data").exists()


def test_source_for_picks_the_registered_class() -> None:
    params = load_params(ROOT / "params.yaml")
    for name, cls in SOURCES.items():
        source = source_for(params.model_copy(update={"data": DataParams(source=name)}))
        assert type(source) is cls and source.name == name
    with pytest.raises(ParamsError, match="unknown source 'nope'"):
        source_for(params.model_copy(update={"data": DataParams(source="nope")}))


# --- dir ------------------------------------------------------------------------------------------


def _dir_source(folder: Path) -> DirSource:
    params = load_params(ROOT / "params.yaml")
    return DirSource(params.model_copy(update={"data": DataParams(source="dir", dir=str(folder))}))


def test_dir_path_hit_and_miss(tmp_path: Path) -> None:
    for month in ("2023-02", "2023-01"):
        (tmp_path / f"green_tripdata_{month}.parquet").write_bytes(b"PAR1")
    (tmp_path / "notes.txt").write_text("not a month")
    source = _dir_source(tmp_path)

    assert source.path("2023-01") == tmp_path / "green_tripdata_2023-01.parquet"
    assert source.months() == ["2023-01", "2023-02"]
    assert source.missing(["2023-01", "2024-01"]) == ["2024-01"]
    with pytest.raises(StageError, match=r"no file for 2024-01 in .* \(have: 2023-01, 2023-02\)"):
        source.path("2024-01")


def test_dir_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"have: no green_tripdata"):
        _dir_source(tmp_path).path(MONTH)
    missing = _dir_source(tmp_path / "nowhere")
    with pytest.raises(StageError, match="does not exist"):
        missing.path(MONTH)
    assert missing.months() == [] and missing.missing([MONTH]) == [MONTH]
    with pytest.raises(UnpublishedError, match="is not a folder"):
        missing.latest(MONTH)


def test_dir_real_folder(real_dir: Path) -> None:
    source = _dir_source(real_dir)
    assert source.path("2021-01").is_file()
    assert source.latest("2024-02") == "2024-01"
    with pytest.raises(StageError, match=r"have: 2021-01, 2021-02, .*\)"):
        source.path("2099-01")


# --- nobody else decides ---------------------------------------------------------------------------


def _compares_data_source(node: ast.AST) -> bool:
    """``data.source == ...``, ``params.data.source in (...)`` and the like."""
    if not isinstance(node, ast.Compare):
        return False
    for operand in (node.left, *node.comparators):
        if isinstance(operand, ast.Attribute) and operand.attr == "source":
            owner = operand.value
            if (isinstance(owner, ast.Name) and owner.id == "data") or (
                isinstance(owner, ast.Attribute) and owner.attr == "data"
            ):
                return True
    return False


def test_only_the_registry_decides_on_data_source() -> None:
    branches = []
    for package in ("autoops", "bench", "core", "serve", "stages", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            branches += [
                f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree) if _compares_data_source(n)
            ]
    assert branches == [], "ask core.sources.source_for(params) instead of branching on data.source"
