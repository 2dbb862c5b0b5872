"""Stage 1, ingest: one month -> one canonical parquet under data/raw/.

The source (``data.source`` in params.yaml) is asked for each month (core/sources/); every month
is normalised to the canonical schema (core/schema.py) so later stages never see TLC's schema
eras, and streamed one row group (or generator chunk) at a time, so memory does not grow with
its size.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.io import atomic_dir
from core.params import Params, load_params
from core.paths import RAW_DIR, raw_path
from core.runner import run_stage
from core.sources import source_for

log = logging.getLogger(__name__)


def ingest(params: Params, out_dir: Path = RAW_DIR) -> list[Path]:
    source = source_for(params)
    written = []
    with atomic_dir(out_dir) as tmp:
        for month in params.months.all_months:
            rows = source.materialise(month, raw_path(month, tmp))
            log.info("%s: %d rows from %s", month, rows, source.name)
            written.append(raw_path(month, out_dir))
    return written


def main() -> None:
    ingest(load_params())


if __name__ == "__main__":
    run_stage("ingest", main)
