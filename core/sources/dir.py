"""The ``dir`` source: TLC's files from a local folder (``data.dir``), e.g. a mirror or ../shared/data/tlc.

Works offline on real months; the folder is the whole truth: the newest file in it is the newest
published month, and a month without a file is missing before any work starts.
"""

from __future__ import annotations

from pathlib import Path

from core.io import StageError
from core.months import month_index
from core.sources.base import UnpublishedError
from core.sources.files import FILE_PATTERN, FileSource, months_in, validated_month


class DirSource(FileSource):
    name = "dir"

    @property
    def folder(self) -> Path:
        return self.root / self.params.data.dir

    def path(self, month: str) -> Path:
        """``folder/green_tripdata_<month>.parquet``, or an error listing what is there."""
        month = validated_month(month)
        folder = self.folder
        path = folder / FILE_PATTERN.format(month=month)
        if path.is_file():
            return path
        if not folder.is_dir():
            raise StageError(f"no file for {month} in {folder} (the folder does not exist; check data.dir)")
        present = months_in(folder)
        have = ", ".join(present) if present else "no green_tripdata_YYYY-MM.parquet files"
        raise StageError(f"no file for {month} in {folder} (have: {have})")

    def latest(self, this_month: str) -> str:
        folder = self.folder.resolve()
        if not folder.is_dir():
            raise UnpublishedError(f"data.dir {self.params.data.dir} ({folder}) is not a folder")
        months = [m for m in months_in(folder) if month_index(m) <= month_index(this_month)]
        if not months:
            raise UnpublishedError(f"no green_tripdata_YYYY-MM.parquet files in {folder}")
        return months[-1]

    def months(self) -> list[str]:
        return months_in(self.folder) if self.folder.is_dir() else []

    def describe(self) -> str:
        return f"data.dir {self.params.data.dir} (data.source: dir)"
