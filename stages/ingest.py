"""Stage 1, ingest: one month -> one canonical parquet under data/raw/.

The source (synthetic, tlc or dir) comes from params.yaml. Every month is normalised to the
canonical schema (core/schema.py) so later stages never see TLC's schema eras. A month is
streamed, one row group (or generator chunk) at a time, so memory does not grow with its size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core import tlc
from core.io import BATCH_ROWS, StageError, atomic_dir, open_parquet, parquet_writer
from core.params import DataParams, Params, load_params
from core.paths import RAW_DIR, raw_path
from core.runner import run_stage
from core.schema import CANONICAL_SCHEMA, normalize

log = logging.getLogger(__name__)


def read_parquet_file(path: Path) -> pa.Table:
    """Read a TLC parquet file; a truncated or corrupt file is a one-line error naming it."""
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: not a readable parquet file (truncated or corrupt?): {exc}") from exc


def load_month(month: str, params: Params) -> tuple[pa.Table, str]:
    """The raw month as published (any schema era) and a label naming where it came from."""
    chunks, label = month_chunks(month, params)
    return pa.concat_tables(list(chunks)), label


def month_chunks(month: str, params: Params) -> tuple[Iterator[pa.Table], str]:
    """The raw month in pieces of bounded size (a file's row groups, the generator's chunks)."""
    data: DataParams = params.data
    if data.source == "synthetic":
        from core.synthetic import generate_month_chunks  # only this source needs the generator

        return generate_month_chunks(month, params.synthetic), f"synthetic month {month}"
    path = tlc.read_month_dir(month, Path(data.dir)) if data.source == "dir" else tlc.fetch_month(month, data)
    return _file_chunks(path), str(path)


def _file_chunks(path: Path) -> Iterator[pa.Table]:
    handle = open_parquet(path)
    if handle.metadata.num_rows == 0:
        # An empty month still goes through normalize, which names what is wrong with it.
        yield handle.schema_arrow.empty_table()
        return
    try:
        for batch in handle.iter_batches(batch_size=BATCH_ROWS):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: not a readable parquet file (truncated or corrupt?): {exc}") from exc


def ingest_month(month: str, params: Params, dest: Path) -> int:
    """Stream one month into ``dest`` in the canonical schema; returns its row count."""
    chunks, label = month_chunks(month, params)
    rows = 0
    with parquet_writer(dest, CANONICAL_SCHEMA) as writer:
        for chunk in chunks:
            if chunk.num_rows == 0 and rows:
                continue
            table = normalize(chunk, source=label)
            writer.write_table(table)
            rows += table.num_rows
    log.info("%s: %d rows from %s", month, rows, params.data.source)
    return rows


def ingest(params: Params, out_dir: Path = RAW_DIR) -> list[Path]:
    months = params.months.all_months
    written = []
    with atomic_dir(out_dir) as tmp:
        for month in months:
            ingest_month(month, params, raw_path(month, tmp))
            written.append(raw_path(month, out_dir))
    return written


def main() -> None:
    ingest(load_params())


if __name__ == "__main__":
    run_stage("ingest", main)
