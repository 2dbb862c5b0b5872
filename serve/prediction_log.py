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

PostgreSQL (``AUTOOPS_PREDICTION_LOG_URL``) is the shared sink for more than one replica: the same
table, the same blobs, every replica's writer taking one advisory lock per flush so the running
row count stays exact across machines. A sink that goes away never fails a request: the writer
keeps what it could not write (up to ``max_pending_rows``), reconnects, writes it when the server
is back, and says meanwhile that it is down (``/health``'s prediction_log, the
``autoops_prediction_log_up`` gauge).
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
from typing import Any

import numpy as np

from stages.features import FEATURES

TABLE = "requests"
PREDICTION = "prediction"  # stages.evaluate.PREDICTION, the column the drift stage compares
BUSY_TIMEOUT_S = 10.0
# Blobs are this dtype, C order: (n_rows, len(FEATURES)) features and (n_rows,) predictions.
BLOB_DTYPE = np.dtype("<f8")

log = logging.getLogger(__name__)


# Any fixed 64-bit key: every writer of one PostgreSQL log serialises its flushes on it.
PG_LOCK_KEY = 0x4155544F4F5053  # "AUTOOPS"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class LogSchemaError(RuntimeError):
    """The log on disk was written for different features."""


def is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def describe(target: Path | str) -> str:
    """The log's location without a password, for messages."""
    if not is_postgres(target):
        return str(target)
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(str(target))
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _check_features(stored: str | None, where: str) -> None:
    if stored is None or json.loads(stored) != list(FEATURES):
        raise LogSchemaError(
            f"{where}: written for features {stored and json.loads(stored)}, not {list(FEATURES)}; "
            "export it and start a new log (AUTOOPS_PREDICTION_LOG / AUTOOPS_PREDICTION_LOG_URL)"
        )


def connect_postgres(url: str, *, readonly: bool = False) -> Any:
    """Open the shared log (creating its tables once); refuses a log for other features."""
    import psycopg

    # A short connect timeout: the writer thread retries, and a reader should fail fast.
    conn = psycopg.connect(url, connect_timeout=5, autocommit=readonly)
    try:
        if not readonly:
            with conn.transaction():
                # Two replicas starting at once would race on CREATE TABLE IF NOT EXISTS.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute(
                    "INSERT INTO meta VALUES ('features', %s) ON CONFLICT (key) DO NOTHING",
                    (json.dumps(list(FEATURES)),),
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, "
                    "ts DOUBLE PRECISION NOT NULL, model_version TEXT NOT NULL, n_rows INTEGER NOT NULL, "
                    "last_row BIGINT NOT NULL, features BYTEA NOT NULL, predictions BYTEA NOT NULL)"
                )
                conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_last_row ON {TABLE} (last_row)")
            conn.autocommit = True
        row = conn.execute("SELECT value FROM meta WHERE key = 'features'").fetchone()
        _check_features(row and row[0], describe(url))
    except BaseException:
        conn.close()
        raise
    return conn


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
    try:
        _check_features(row and row[0], str(path))
    except LogSchemaError:
        conn.close()
        raise
    return conn


def _records(items: list[tuple[float, str, np.ndarray, np.ndarray]], last: int) -> tuple[list[tuple], int]:
    """Table rows for queued requests, numbering rows on from ``last``; returns them and the new last."""
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
    return records, last


class PredictionLog:
    def __init__(
        self,
        path: Path | str,
        *,
        max_rows: int,
        flush_rows: int = 2000,
        flush_interval_s: float = 1.0,
        max_pending_rows: int = 200_000,
        on_rows: Callable[[str, int], None] | None = None,
        on_up: Callable[[bool], None] | None = None,
    ) -> None:
        # A SQLite file, or a PostgreSQL URL (the shared sink).
        self.path = path
        self.postgres = is_postgres(path)
        self.max_rows = max_rows
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self.on_rows = on_rows
        self.on_up = on_up
        self._queue: collections.deque[tuple[float, str, np.ndarray, np.ndarray]] = collections.deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        # Why the sink last refused a write; None while it writes.
        self.error: str | None = None

    @property
    def sink(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def status(self) -> dict[str, Any]:
        with self._lock:
            pending = self._pending
        return {
            "sink": self.sink,
            "up": self.error is None,
            "error": self.error,
            "pending_rows": pending,
            "written_rows": self.written,
            "dropped_rows": self.dropped,
        }

    def _connect(self) -> Any:
        return connect_postgres(str(self.path)) if self.postgres else connect(Path(self.path))

    def _set_error(self, error: str | None) -> None:
        if (error is None) != (self.error is None) and self.on_up is not None:
            self.on_up(error is None)
        self.error = error

    def start(self) -> None:
        # Fail at startup (bad path, read-only disk, another feature set), not in the writer later.
        if self.postgres:
            import psycopg

            try:
                connect_postgres(str(self.path)).close()
            except psycopg.OperationalError as exc:
                # A shared server that is down must not keep replicas from serving: the writer
                # keeps trying and /health says so meanwhile.
                log.warning("prediction log %s: not reachable yet: %s", describe(self.path), _one_line(exc))
                self._set_error(f"unreachable: {_one_line(exc)}")
        else:
            connect(Path(self.path)).close()
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
        if not self.postgres:
            conn = connect(Path(self.path))
            try:
                while not self._stop.is_set():
                    self._wake.wait(self.flush_interval_s)
                    self._wake.clear()
                    self._flush(conn)
                self._flush(conn)
            finally:
                conn.close()
            return
        pg: Any = None
        try:
            while True:
                stopping = self._stop.is_set()
                if not stopping:
                    self._wake.wait(self.flush_interval_s)
                    self._wake.clear()
                pg = self._flush_postgres(pg)
                if stopping:
                    break
        finally:
            if pg is not None:
                pg.close()

    def _requeue(self, items: list[tuple[float, str, np.ndarray, np.ndarray]], rows: int) -> int:
        """Put unwritten requests back in front of the queue; returns the rows that did not fit."""
        with self._lock:
            if self._pending + rows > self.max_pending_rows:
                self.dropped += rows
                return rows
            self._queue.extendleft(reversed(items))
            self._pending += rows
        return 0

    def _flush_postgres(self, conn: Any) -> Any:
        """Write what is queued to PostgreSQL; returns the connection to use next time (None: reconnect)."""
        import psycopg

        items = self._drain()
        if not items and conn is not None:
            return conn
        rows = sum(len(predictions) for _, _, _, predictions in items)
        try:
            if conn is None:
                conn = connect_postgres(str(self.path))
                conn.autocommit = False
            if items:
                with conn.transaction():
                    # One writer at a time across replicas, so last_row is a gapless running count.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
                    newest = conn.execute(f"SELECT last_row FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchone()
                    records, last = _records(items, newest[0] if newest else 0)
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            f"INSERT INTO {TABLE} (ts, model_version, n_rows, last_row, features, "
                            "predictions) VALUES (%s, %s, %s, %s, %s, %s)",
                            records,
                        )
                    conn.execute(f"DELETE FROM {TABLE} WHERE last_row <= %s", (last - self.max_rows,))
        except (psycopg.Error, OSError, LogSchemaError) as exc:
            lost = self._requeue(items, rows) if items else 0
            if self.error is None:
                log.warning(
                    "prediction log %s: down, keeping up to %d rows until it is back: %s",
                    describe(self.path),
                    self.max_pending_rows,
                    _one_line(exc),
                )
            self._set_error(_one_line(exc))
            if lost and self.on_rows is not None:
                self.on_rows("dropped", lost)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            # Do not spin while the server is away: the next attempt waits a flush interval.
            self._stop.wait(self.flush_interval_s)
            return None
        if self.error is not None:
            log.warning("prediction log %s: back, writing again", describe(self.path))
            self._set_error(None)
        if items:
            self.written += rows
            if self.on_rows is not None:
                self.on_rows("written", rows)
        return conn

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
                records, last = _records(items, newest[0] if newest else 0)
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
            self._set_error(_one_line(exc))
            if self.on_rows is not None:
                self.on_rows("dropped", rows)
            return
        self._set_error(None)
        self.written += rows
        if self.on_rows is not None:
            self.on_rows("written", rows)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
