"""The prediction log's table, the same in either sink (SQLite, PostgreSQL): its name, its blobs,
the features check, and the rows a batch of queued requests becomes.

One table row per request, the features and predictions as float64 blobs: a 1000-trip batch is
one insert instead of 1000 (logging it costs ~0.05 ms instead of ~4 ms). ``last_row`` is the
running count of logged rows, so "keep the newest max_rows" is one indexed delete. The export tool
(``python -m serve.export_log``) turns it back into one row per trip.
"""

from __future__ import annotations

import json

import numpy as np

from core.features import FEATURES

TABLE = "requests"
PREDICTION = "prediction"  # core.evaluation.PREDICTION, the column the drift stage compares
# Blobs are this dtype, C order: (n_rows, len(FEATURES)) features and (n_rows,) predictions.
BLOB_DTYPE = np.dtype("<f8")

# One served request as queued: timestamp, model version, features, predictions (arrays, or for
# one trip the lists it was predicted from: the writer thread converts them, not the request).
QueuedRequest = tuple[float, str, np.ndarray | list[list[float]], np.ndarray | list[float]]


class LogSchemaError(RuntimeError):
    """The log on disk was written for different features."""


def features_json() -> str:
    """What a new log stores under meta's 'features' key."""
    return json.dumps(list(FEATURES))


def check_features(stored: str | None, where: str) -> None:
    if stored is None or json.loads(stored) != list(FEATURES):
        raise LogSchemaError(
            f"{where}: written for features {stored and json.loads(stored)}, not {list(FEATURES)}; "
            "export it and start a new log (AUTOOPS_PREDICTION_LOG / AUTOOPS_PREDICTION_LOG_URL)"
        )


def table_rows(items: list[QueuedRequest], last: int) -> tuple[list[tuple], int]:
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
