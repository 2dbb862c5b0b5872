"""Atomic output writing and content hashes.

Every artifact is written to a temporary file in the destination folder and renamed into place,
so a crash or a failed validation never leaves a half-written file where a later stage (or DVC)
would take it for a good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class StageError(RuntimeError):
    """An expected failure with a one-line, user-facing message (no traceback needed)."""


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; move it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; outputs must stay readable by other users (the image's
        # non-root service user reads the model), so apply the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, dest: Path | str) -> None:
    # Fixed writer options keep the bytes (and so DVC's hashes) identical from run to run.
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True, store_schema=True)


def write_json(data: Any, dest: Path | str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(text: str, dest: Path | str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def file_sha256(path: Path | str) -> str:
    return file_digest(path, "sha256")


def file_md5(path: Path | str) -> str:
    # What dvc.lock records for a file output.
    return file_digest(path, "md5")


@contextlib.contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary folder; it replaces ``dest`` only if the block succeeds.

    A stage that writes several files (one per month, say) either publishes all of them or none.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Rows a stage reads (and computes on) at a time, and the row groups it writes: the pandas
# intermediates of a batch (filters, features, predictions) stay at a few hundred MB. Below it a
# file is one row group, byte for byte what a whole-table write gives (the default 60k-row run).
BATCH_ROWS = 1 << 18
ROW_GROUP_ROWS = BATCH_ROWS


@contextlib.contextmanager
def parquet_writer(dest: Path | str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A parquet file written batch by batch, with :func:`write_parquet`'s options, published atomically."""
    with atomic_path(dest) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True, store_schema=True)
        try:
            yield writer
        finally:
            writer.close()


def open_parquet(path: Path | str) -> pq.ParquetFile:
    """Open a parquet file; a truncated or corrupt one is a one-line error naming it."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: not a readable parquet file (truncated or corrupt?): {exc}") from exc


def iter_row_groups(path: Path | str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The file in consecutive batches of at most :data:`BATCH_ROWS` rows, whatever its size."""
    handle = open_parquet(path)
    try:
        for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: unreadable (truncated or corrupt?): {exc}") from exc


def read_rows(path: Path | str, positions: np.ndarray | None, columns: list[str] | None = None) -> pa.Table:
    """The rows at the sorted ``positions`` (every row when None), one row group in memory at a time."""
    handle = open_parquet(path)
    if positions is None:
        return handle.read(columns=columns)
    parts, start = [], 0
    for i in range(handle.num_row_groups):
        rows = handle.metadata.row_group(i).num_rows
        lo, hi = np.searchsorted(positions, [start, start + rows])
        if hi > lo:
            group = handle.read_row_group(i, columns=columns)
            parts.append(group.take(pa.array(positions[lo:hi] - start)))
        start += rows
    if not parts:
        return handle.schema_arrow.empty_table().select(columns or handle.schema_arrow.names)
    return pa.concat_tables(parts)


class FrameWriter:
    """Appends frames to a parquet file in row groups of :data:`ROW_GROUP_ROWS` rows.

    A file below that size is one write of one table, byte for byte what a whole-frame write gives.
    """

    def __init__(self, dest: Path, stack: contextlib.ExitStack) -> None:
        self.dest, self.stack = dest, stack
        self.buffer: list[pd.DataFrame] = []
        self.buffered = self.rows = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, frame: pd.DataFrame) -> None:
        if self.buffer and frame.empty:
            return
        self.buffer.append(frame)
        self.buffered += len(frame)
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        frame = self.buffer[0] if len(self.buffer) == 1 else pd.concat(self.buffer, ignore_index=True)
        # preserve_index=False writes no index at all, so the frame's own needs no reset (a copy).
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = self.stack.enter_context(parquet_writer(self.dest, table.schema))
        self.writer.write_table(table)
        self.rows += len(frame)
        self.buffer, self.buffered = [], 0
