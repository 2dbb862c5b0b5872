"""The running service the routes use: model holder, metrics and prediction log, built from the settings.

:func:`serve.app.create_app` builds one :class:`Service` per app and keeps it as ``app.state.service``;
the app's lifespan starts and stops it, and the endpoints (serve/routes.py) reach it through the
request, so none of them closes over it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
from fastapi import HTTPException, Request

from core.features import feature_matrix
from serve.metrics import ServiceMetrics
from serve.model_store import ModelHolder, ServedModel, make_source
from serve.one_trip import feature_row
from serve.one_trip_decoder import OneTripDecoder
from serve.prediction_log import PredictionLog
from serve.request_body import BodyReader, quoted_colons
from serve.request_models import Trip
from serve.settings import Settings, report_startup_failure
from serve.trip_columns import TripBatch
from serve.zones import TripZones


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = metrics = ServiceMetrics()
        self.bodies = BodyReader(settings.max_batch, settings.max_errors)
        self.one_trip = OneTripDecoder()
        self.holder = ModelHolder(
            make_source(settings), settings, on_swap=metrics.model_swapped, on_error=metrics.model_load_failed
        )
        # The shared PostgreSQL log (several replicas) when configured, else the embedded SQLite file.
        log_url = settings.prediction_log_url
        log_target = log_url.get_secret_value() if log_url else settings.prediction_log
        self.prediction_log = (
            PredictionLog(
                log_target,
                max_rows=settings.log_max_rows,
                flush_rows=settings.log_flush_rows,
                flush_interval_s=settings.log_flush_interval_s,
                max_pending_rows=settings.log_max_pending_rows,
                on_rows=lambda outcome, n: metrics.log_rows.labels(outcome).inc(n),
                on_up=lambda up: metrics.log_up.set(1 if up else 0),
            )
            if log_target
            else None
        )
        if self.prediction_log is not None:
            metrics.log_up.set(1)

    async def start(self) -> None:
        try:
            if self.prediction_log is not None:
                self.prediction_log.start()
        except Exception as exc:
            report_startup_failure(exc)
            raise
        self.holder.start()
        # Wait (bounded) for the first model so a fresh worker is ready when it accepts requests;
        # if the source is down the service still starts, not ready, and keeps trying.
        await asyncio.to_thread(self.holder.first_attempt.wait, self.settings.startup_timeout_s)

    def stop(self) -> None:
        self.holder.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()

    def served_model(self) -> ServedModel:
        """The model to answer with; 503 while none is loaded."""
        served = self.holder.current
        if served is None:
            raise HTTPException(503, f"no model loaded yet ({self.holder.last_error or 'loading'})")
        return served

    def predict(self, served: ServedModel, trips: TripBatch, located: TripZones | None) -> np.ndarray:
        """Predict with ``served``, log the request and count the trips."""
        features = feature_matrix(trips.columns(located))
        predictions = served.predictor.predict(features)
        if self.prediction_log is not None:
            self.prediction_log.append(features, predictions, served.version)
        self.metrics.counted(served.version).inc(len(trips))
        return predictions

    def predict_trip(self, served: ServedModel, trip: Trip, located: TripZones | None) -> float:
        """:meth:`predict` for one trip, in plain Python up to the trees (serve/one_trip.py): the
        same answer, without NumPy's per-call set-up, which was most of a single trip's cost."""
        return self._predict_row(served, feature_row(trip, located))

    def _predict_row(self, served: ServedModel, row: list[float]) -> float:
        """One trip's feature row to its prediction, logged and counted: both one-trip paths."""
        prediction = served.predictor.predict_row(row)
        if self.prediction_log is not None:
            self.prediction_log.append([row], [prediction], served.version)
        self.metrics.counted(served.version).inc()
        return prediction

    def answer_one(self, body: bytes) -> bytes | None:
        """/predict's 200 answer for a trip in the common form (serve/one_trip_decoder.py), or
        None: the body goes the general way (pydantic's validation and errors, coordinates, 503).
        The same answer, log row and count as :func:`serve.routes.predict_one` gives it."""
        served = self.holder.current
        decoded = self.one_trip.row(body)
        # A key given twice (msgspec keeps the last) is request_body's to refuse: the body's
        # `":` count is its keys' count when none was.
        if decoded is None or served is None or quoted_colons(body) != decoded[1]:
            return None
        prediction = self._predict_row(served, decoded[0])
        return orjson.dumps({"duration_min": prediction, "model_version": served.version})


def service_of(request: Request) -> Service:
    """The service of the app answering ``request`` (set by :func:`serve.app.create_app`)."""
    service: Service = request.app.state.service
    return service
