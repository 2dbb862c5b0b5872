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
