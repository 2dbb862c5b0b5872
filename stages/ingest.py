"""Stage 1, ingest: one month -> one canonical parquet under data/raw/.

The source (synthetic, tlc or dir) comes from params.yaml. Every month is normalised to the
canonical schema (stages/schema.py) so later stages never see TLC's schema eras.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages import tlc
from stages.io import StageError, atomic_dir, write_parquet
from stages.params import DataParams, Params, load_params
from stages.paths import RAW_DIR
from stages.runner import run_stage
from stages.schema import normalize

log = logging.getLogger(__name__)


def raw_path(month: str, folder: Path = RAW_DIR) -> Path:
    return folder / f"green_tripdata_{month}.parquet"


def read_parquet_file(path: Path) -> pa.Table:
    """Read a TLC parquet file; a truncated or corrupt file is a one-line error naming it."""
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: not a readable parquet file (truncated or corrupt?): {exc}") from exc


def load_month(month: str, params: Params) -> tuple[pa.Table, str]:
    """The raw month as published (any schema era) and a label naming where it came from."""
    data: DataParams = params.data
    if data.source == "synthetic":
        from stages.synthetic import generate_month  # only this source needs the generator

        return generate_month(month, params.synthetic), f"synthetic month {month}"
    path = tlc.read_month_dir(month, Path(data.dir)) if data.source == "dir" else tlc.fetch_month(month, data)
    return read_parquet_file(path), str(path)


def ingest(params: Params, out_dir: Path = RAW_DIR) -> list[Path]:
    months = params.months.all_months
    written = []
    with atomic_dir(out_dir) as tmp:
        for month in months:
            raw, label = load_month(month, params)
            table = normalize(raw, source=label)
            write_parquet(table, raw_path(month, tmp))
            log.info("%s: %d rows from %s", month, table.num_rows, params.data.source)
            written.append(raw_path(month, out_dir))
    return written


def main() -> None:
    ingest(load_params())


if __name__ == "__main__":
    run_stage("ingest", main)
