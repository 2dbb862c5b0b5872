"""The prediction log's PostgreSQL sink (``AUTOOPS_PREDICTION_LOG_URL``), shared by more than one
replica: the same table and blobs as the SQLite file, every replica's writer taking one advisory
lock per flush so the running row count stays exact across machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.prediction_log_table import TABLE, QueuedRequest, check_features, features_json, table_rows

# Any fixed 64-bit key: every writer of one PostgreSQL log serialises its flushes on it.
PG_LOCK_KEY = 0x4155544F4F5053  # "AUTOOPS"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def describe(target: Path | str) -> str:
    """The log's location without a password, for messages."""
    if not is_postgres(target):
        return str(target)
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(str(target))
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


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
                    (features_json(),),
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, "
                    "ts DOUBLE PRECISION NOT NULL, model_version TEXT NOT NULL, n_rows INTEGER NOT NULL, "
                    "last_row BIGINT NOT NULL, features BYTEA NOT NULL, predictions BYTEA NOT NULL)"
                )
                conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_last_row ON {TABLE} (last_row)")
            conn.autocommit = True
        row = conn.execute("SELECT value FROM meta WHERE key = 'features'").fetchone()
        check_features(row and row[0], describe(url))
    except BaseException:
        conn.close()
        raise
    return conn


def write_postgres(conn: Any, items: list[QueuedRequest], max_rows: int) -> None:
    """Append queued requests in one transaction and drop rows beyond the newest ``max_rows``;
    raises psycopg.Error (rolled back) when the server refuses them."""
    with conn.transaction():
        # One writer at a time across replicas, so last_row is a gapless running count.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
        newest = conn.execute(f"SELECT last_row FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchone()
        records, last = table_rows(items, newest[0] if newest else 0)
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {TABLE} (ts, model_version, n_rows, last_row, features, "
                "predictions) VALUES (%s, %s, %s, %s, %s, %s)",
                records,
            )
        conn.execute(f"DELETE FROM {TABLE} WHERE last_row <= %s", (last - max_rows,))
