"""The prediction log's SQLite sink: one file, shared by the uvicorn worker processes of one machine.

WAL mode lets several workers append in turn and readers (``python -m serve.export_log``) read
meanwhile. A flush is one transaction that takes the write lock before it reads ``last_row``, so
workers never interleave their row counts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from serve.prediction_log_table import (
    TABLE,
    LogSchemaError,
    QueuedRequest,
    check_features,
    features_json,
    table_rows,
)

BUSY_TIMEOUT_S = 10.0


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and create) the log; refuses a log whose features are not this code's FEATURES."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in write_sqlite).
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last flush, never corrupt the file; FULL fsyncs per flush.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('features', ?)", (features_json(),))
        # last_row: running count of logged rows, so "keep the newest max_rows" is one indexed delete.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
            "model_version TEXT NOT NULL, n_rows INTEGER NOT NULL, last_row INTEGER NOT NULL, "
            "features BLOB NOT NULL, predictions BLOB NOT NULL)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_last_row ON {TABLE} (last_row)")
        conn.execute("COMMIT")
    row = conn.execute("SELECT value FROM meta WHERE key = 'features'").fetchone()
    try:
        check_features(row and row[0], str(path))
    except LogSchemaError:
        conn.close()
        raise
    return conn


def write_sqlite(conn: sqlite3.Connection, items: list[QueuedRequest], max_rows: int) -> None:
    """Append queued requests in one transaction and drop rows beyond the newest ``max_rows``;
    raises sqlite3.Error (rolled back) when the file refuses them."""
    # IMMEDIATE: take the write lock before reading last_row, so workers never interleave.
    conn.execute("BEGIN IMMEDIATE")
    try:
        newest = conn.execute(f"SELECT last_row FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchone()
        records, last = table_rows(items, newest[0] if newest else 0)
        conn.executemany(
            f"INSERT INTO {TABLE} (ts, model_version, n_rows, last_row, features, predictions) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            records,
        )
        conn.execute(f"DELETE FROM {TABLE} WHERE last_row <= ?", (last - max_rows,))
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself on some errors (a full disk): a ROLLBACK would then
        # fail with "no transaction is active" and that would be reported instead.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
