"""The prediction log: what the service served, for monitoring (drift) and audits.

Per served request: timestamp, model version, the model's features and the predictions - nothing
else (no client data beyond what the features are). Requests only append to an in-memory queue; a
background thread writes it to SQLite in batches (one transaction per flush), so the request path
never waits for a disk. The queue is bounded (rows beyond it are dropped and counted, never
blocking), and so is the table: requests older than the newest ``max_rows`` rows are deleted.

SQLite because several uvicorn worker processes append to the same log: WAL mode lets them write
in turn and readers (``python -m serve.export_log``) read meanwhile. One table row per request,
the features and predictions as float64 blobs: a 1000-trip batch is one insert instead of 1000
(logging it costs ~0.05 ms instead of ~4 ms). The export tool turns it back into one row per trip.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stages.features import FEATURES

TABLE = "requests"
PREDICTION = "prediction"  # stages.evaluate.PREDICTION, the column the drift stage compares
BUSY_TIMEOUT_S = 10.0
# Blobs are this dtype, C order: (n_rows, len(FEATURES)) features and (n_rows,) predictions.
BLOB_DTYPE = np.dtype("<f8")

log = logging.getLogger(__name__)


class LogSchemaError(RuntimeError):
    """The log on disk was written for different features."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and create) the log; refuses a log whose features are not this code's FEATURES."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in PredictionLog._flush).
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last flush, never corrupt the file; FULL fsyncs per flush.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('features', ?)", (json.dumps(list(FEATURES)),))
        # last_row: running count of logged rows, so "keep the newest max_rows" is one indexed delete.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
            "model_version TEXT NOT NULL, n_rows INTEGER NOT NULL, last_row INTEGER NOT NULL, "
            "features BLOB NOT NULL, predictions BLOB NOT NULL)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_last_row ON {TABLE} (last_row)")
        conn.execute("COMMIT")
    row = conn.execute("SELECT value FROM meta WHERE key = 'features'").fetchone()
    if row is None or json.loads(row[0]) != list(FEATURES):
        conn.close()
        raise LogSchemaError(
            f"{path}: written for features {row and json.loads(row[0])}, not {list(FEATURES)}; "
            "export it and start a new log (AUTOOPS_PREDICTION_LOG)"
        )
    return conn


class PredictionLog:
    def __init__(
        self,
        path: Path,
        *,
        max_rows: int,
        flush_rows: int = 2000,
        flush_interval_s: float = 1.0,
        max_pending_rows: int = 200_000,
        on_rows: Callable[[str, int], None] | None = None,
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self.on_rows = on_rows
        self._queue: collections.deque[tuple[float, str, np.ndarray, np.ndarray]] = collections.deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        # Fail at startup (bad path, read-only disk, another feature set), not in the writer later.
        connect(self.path).close()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, features: np.ndarray, predictions: np.ndarray, model_version: str) -> None:
        """Queue one request's rows; never blocks on I/O."""
        rows = len(predictions)
        with self._lock:
            dropped = self._pending + rows > self.max_pending_rows
            if dropped:
                self.dropped += rows
            else:
                self._queue.append((time.time(), model_version, features, predictions))
                self._pending += rows
            full = self._pending >= self.flush_rows
        if dropped and self.on_rows is not None:
            self.on_rows("dropped", rows)
        if full:
            self._wake.set()

    def _drain(self) -> list[tuple[float, str, np.ndarray, np.ndarray]]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._pending = 0
        return items

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            while not self._stop.is_set():
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                self._flush(conn)
            self._flush(conn)
        finally:
            conn.close()

    def _flush(self, conn: sqlite3.Connection) -> None:
        items = self._drain()
        if not items:
            return
        rows = sum(len(predictions) for _, _, _, predictions in items)
        try:
            # IMMEDIATE: take the write lock before reading last_row, so workers never interleave.
            conn.execute("BEGIN IMMEDIATE")
            try:
                newest = conn.execute(f"SELECT last_row FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchone()
                last = newest[0] if newest else 0
                records = []
                for ts, version, features, predictions in items:
                    last += len(predictions)
                    records.append(
                        (
                            ts,
                            version,
                            len(predictions),
                            last,
                            np.ascontiguousarray(features, BLOB_DTYPE).tobytes(),
                            np.ascontiguousarray(predictions, BLOB_DTYPE).tobytes(),
                        )
                    )
                conn.executemany(
                    f"INSERT INTO {TABLE} (ts, model_version, n_rows, last_row, features, predictions) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    records,
                )
                conn.execute(f"DELETE FROM {TABLE} WHERE last_row <= ?", (last - self.max_rows,))
                conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk): a ROLLBACK would then
                # fail with "no transaction is active" and that would be reported instead.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # Monitoring data is not worth failing (or blocking) predictions for: count and go on.
            log.warning("prediction log %s: %d rows not written: %s", self.path, rows, exc)
            self.dropped += rows
            if self.on_rows is not None:
                self.on_rows("dropped", rows)
            return
        self.written += rows
        if self.on_rows is not None:
            self.on_rows("written", rows)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
