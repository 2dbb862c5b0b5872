"""core/io.py: outputs are published whole or not at all; the file hashes DVC and the model card use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.io import atomic_dir, file_md5, file_sha256


def test_atomic_dir_replaces_an_existing_folder(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "old-month.parquet").write_text("old")
    with atomic_dir(dest) as tmp:
        assert tmp != dest and (dest / "old-month.parquet").exists()  # readers still see the old one
        (tmp / "new-month.parquet").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new-month.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary or .old folder left


def test_atomic_dir_keeps_the_old_folder_when_the_block_fails(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "month.parquet").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "month.parquet").write_text("half")
        raise RuntimeError("the stage failed")
    assert (dest / "month.parquet").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_file_hashes_are_the_usual_digests(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    data = bytes(range(256)) * 5000  # several read blocks
    path.write_bytes(data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
