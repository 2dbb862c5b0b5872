"""The prediction log: what the service served, for monitoring (drift) and audits.

One row per predicted trip: timestamp, model version, the model's features, the prediction -
nothing else (no client data beyond what the features are). Requests only append to an in-memory
queue; a background thread writes it to SQLite in batches (one transaction per flush), so the
request path never waits for a disk. The queue is bounded (rows beyond it are dropped and
counted, never blocking), and so is the table: the oldest rows beyond ``max_rows`` are deleted.

SQLite rather than parquet files because several uvicorn worker processes append to the same log:
WAL mode lets them write in turn and readers (``python -m serve.export_log``) read meanwhile.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stages.features import FEATURES

TABLE = "predictions"
PREDICTION = "prediction"  # stages.evaluate.PREDICTION, the column the drift stage compares
COLUMNS = ("ts", "model_version", *FEATURES, PREDICTION)
BUSY_TIMEOUT_MS = 10_000

log = logging.getLogger(__name__)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a power cut may lose the last flush, never corrupt the file; FULL would fsync per batch.
    conn.execute("PRAGMA synchronous=NORMAL")
    feature_columns = ", ".join(f'"{name}" REAL' for name in FEATURES)
    # AUTOINCREMENT: ids are never reused, so "keep the newest max_rows" is one range delete.
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
        f"model_version TEXT NOT NULL, {feature_columns}, {PREDICTION} REAL NOT NULL)"
    )
    conn.commit()
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
        # Fail at startup (bad path, read-only disk), not silently in the writer thread later.
        connect(self.path).close()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, features: np.ndarray, predictions: np.ndarray, model_version: str) -> None:
        """Queue one request's rows; never blocks on I/O."""
        rows = len(predictions)
        with self._lock:
            if self._pending + rows > self.max_pending_rows:
                self.dropped += rows
                dropped = True
            else:
                self._queue.append((time.time(), model_version, features, predictions))
                self._pending += rows
                dropped = False
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
        rows = [
            (ts, version, *features, prediction)
            for ts, version, matrix, predictions in items
            for features, prediction in zip(matrix.tolist(), predictions.tolist(), strict=True)
        ]
        placeholders = ", ".join("?" * len(COLUMNS))
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        try:
            with conn:
                conn.executemany(f"INSERT INTO {TABLE} ({names}) VALUES ({placeholders})", rows)
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE id <= (SELECT MAX(id) FROM {TABLE}) - ?", (self.max_rows,)
                )
        except sqlite3.Error as exc:
            # Monitoring data is not worth failing (or blocking) predictions for: count and go on.
            log.warning("prediction log %s: %d rows not written: %s", self.path, len(rows), exc)
            self.dropped += len(rows)
            if self.on_rows is not None:
                self.on_rows("dropped", len(rows))
            return
        self.written += len(rows)
        if self.on_rows is not None:
            self.on_rows("written", len(rows))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
