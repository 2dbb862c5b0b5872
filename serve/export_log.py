"""``python -m serve.export_log OUT.parquet``: the prediction log as the drift stage's current data.

The parquet has the model's FEATURES columns (less any no request carried) and ``prediction``
(what the drift stage, core/drift.py, compares with the reference holdout), plus ``model_version`` and
``timestamp`` (UTC) to filter on::

    python -m serve.export_log served.parquet --since 2021-02-01

The log is the SQLite file (``AUTOOPS_PREDICTION_LOG``) or, with several replicas, the shared
PostgreSQL log (``AUTOOPS_PREDICTION_LOG_URL``, or ``--log postgresql://...``): everything served.

and then ``python -m stages.drift --current served.parquet`` (``core.drift.prediction_log_drift``).
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import pyarrow as pa
import typer

from core.features import FEATURES
from core.io import write_parquet
from serve.prediction_log_postgres import connect_postgres, describe, is_postgres
from serve.prediction_log_sqlite import connect
from serve.prediction_log_table import BLOB_DTYPE, PREDICTION, TABLE
from serve.settings import Settings


def read_log(
    path: Path | str,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Logged predictions, one row per trip, oldest first (the newest ``limit`` rows when given)."""
    postgres = is_postgres(path)
    if not postgres and not Path(path).exists():
        raise FileNotFoundError(f"{path}: no prediction log here (is AUTOOPS_PREDICTION_LOG set elsewhere?)")
    where, args = ["1 = 1"], []
    if since is not None:
        where.append("ts >= ?")
        args.append((since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp())
    if model_version is not None:
        where.append("model_version = ?")
        args.append(model_version)
    opened = connect_postgres(str(path), readonly=True) if postgres else connect(Path(path), readonly=True)
    with contextlib.closing(opened) as conn:
        # psycopg's placeholder is %s, sqlite3's is ?; the statements are otherwise the same.
        mark = "%s" if postgres else "?"
        where = [w.replace("?", mark) for w in where]
        if limit is not None:
            # Requests are numbered by their last row: the newest `limit` rows are one range.
            newest = conn.execute(f"SELECT MAX(last_row) FROM {TABLE}").fetchone()[0] or 0
            where.append(f"last_row > {mark}")
            args.append(newest - limit)
        records = conn.execute(
            f"SELECT ts, model_version, n_rows, features, predictions FROM {TABLE} "
            f"WHERE {' AND '.join(where)} ORDER BY id",
            args,
        ).fetchall()
    counts = np.array([r[2] for r in records], dtype=np.int64)
    features = np.frombuffer(b"".join(bytes(r[3]) for r in records), dtype=BLOB_DTYPE).reshape(
        -1, len(FEATURES)
    )
    frame = pd.DataFrame(features.astype(np.float64), columns=list(FEATURES))
    frame[PREDICTION] = np.frombuffer(b"".join(bytes(r[4]) for r in records), dtype=BLOB_DTYPE).astype(
        np.float64
    )
    frame.insert(0, "model_version", np.repeat(np.array([r[1] for r in records], dtype=object), counts))
    frame.insert(
        0, "timestamp", pd.to_datetime(np.repeat([r[0] for r in records], counts), unit="s", utc=True)
    )
    return frame if limit is None else frame.iloc[-limit:].reset_index(drop=True)


def export(
    path: Path | str,
    out: Path,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    limit: int | None = None,
    keep_empty: bool = False,
) -> tuple[int, list[str]]:
    """Write the (filtered) log to ``out`` as parquet; returns (rows, feature columns left out).

    A feature no request ever carried (an optional field clients do not send) is all null; it is
    left out unless ``keep_empty``, because there is nothing to test for drift and Evidently
    refuses an empty column - the drift stage then simply tests the other columns.
    """
    frame = read_log(path, since=since, model_version=model_version, limit=limit)
    empty = [] if keep_empty or frame.empty else [c for c in FEATURES if frame[c].isna().all()]
    write_parquet(pa.Table.from_pandas(frame.drop(columns=empty), preserve_index=False), out)
    return len(frame), empty


def run(
    out: Annotated[Path, typer.Argument(help="parquet file to write", show_default=False)],
    log: Annotated[
        str | None,
        typer.Option(
            help="the SQLite log or a postgresql:// URL "
            "(default: AUTOOPS_PREDICTION_LOG_URL, else AUTOOPS_PREDICTION_LOG)"
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            parser=datetime.fromisoformat,
            metavar="ISO",
            help="only rows from then on (ISO; UTC if no offset)",
        ),
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="only rows this model version served")] = None,
    limit: Annotated[int | None, typer.Option(help="only the newest N rows")] = None,
    keep_empty: Annotated[
        bool, typer.Option("--keep-empty", help="keep features no request carried")
    ] = False,
) -> None:
    """Write the prediction log as the drift stage's current data (parquet, one row per trip)."""
    log_path: Path | str | None = log
    if log_path is None:
        settings = Settings.from_env()
        url = settings.prediction_log_url
        log_path = url.get_secret_value() if url is not None else settings.prediction_log
    elif not is_postgres(log_path):
        log_path = Path(log_path)
    if log_path is None:
        sys.exit("error: the prediction log is off (AUTOOPS_PREDICTION_LOG); pass --log PATH")
    try:
        rows, empty = export(
            log_path, out, since=since, model_version=model_version, limit=limit, keep_empty=keep_empty
        )
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:
        import psycopg

        if not isinstance(exc, psycopg.Error):
            raise
        sys.exit(f"error: prediction log {describe(str(log_path))}: {' '.join(str(exc).split())}")
    print(f"{rows} predictions -> {out}")
    if empty:
        print(f"left out (no request carried them, nothing to test for drift): {', '.join(empty)}")


if __name__ == "__main__":
    typer.run(run)
