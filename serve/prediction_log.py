"""The prediction log: what the service served, for monitoring (drift) and audits.

Per served request: timestamp, model version, the model's features and the predictions - nothing
else (no client data beyond what the features are). Requests only append to an in-memory queue; a
background thread writes it to the sink in batches (one transaction per flush), so the request path
never waits for a disk. The queue is bounded (rows beyond it are dropped and counted, never
blocking), and so is the table: requests older than the newest ``max_rows`` rows are deleted.

This module is the queue and its writer thread; the table is in serve/prediction_log_table.py, the
sinks in serve/prediction_log_sqlite.py (a file for the worker processes of one machine, the
default) and serve/prediction_log_postgres.py (``AUTOOPS_PREDICTION_LOG_URL``, shared by more
than one replica). A sink that goes away never fails a request: the writer keeps what it could not
write (up to ``max_pending_rows``), reconnects, writes it when the server is back, and says
meanwhile that it is down (``/health``'s prediction_log, the ``autoops_prediction_log_up`` gauge).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve.prediction_log_postgres import connect_postgres, describe, is_postgres, write_postgres
from serve.prediction_log_sqlite import connect, write_sqlite
from serve.prediction_log_table import LogSchemaError, QueuedRequest

log = logging.getLogger(__name__)


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
        self._queue: collections.deque[QueuedRequest] = collections.deque()
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

    def append(
        self,
        features: np.ndarray | list[list[float]],
        predictions: np.ndarray | list[float],
        model_version: str,
    ) -> None:
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

    def _drain(self) -> list[QueuedRequest]:
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

    def _requeue(self, items: list[QueuedRequest], rows: int) -> int:
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
                write_postgres(conn, items, self.max_rows)
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
            write_sqlite(conn, items, self.max_rows)
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
