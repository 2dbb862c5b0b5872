"""The FastAPI application: ``create_app()`` builds it from :class:`serve.settings.Settings`.

Run it with ``python -m serve`` (uvicorn, one worker per core). Predictions run inline on the event
loop: a compiled prediction costs microseconds, far less than a thread hand-off would.

Size (~420 lines): ``create_app`` still defines its routes as closures over the holder, metrics and
log (issue 10 asks for an ``APIRouter``; not done yet: the routes' OpenAPI texts come from the
settings at build time, and the module is being changed for issue 11 at the same time).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.docs import add_docs
from serve.metrics import MetricsMiddleware, ServiceMetrics
from serve.model_store import ModelHolder, ServedModel, make_source
from serve.prediction_log import PredictionLog
from serve.schemas import (
    BatchPrediction,
    BatchRequest,
    BatchTooLarge,
    Error,
    Health,
    ModelInfo,
    OutsideZones,
    Prediction,
    ReloadResult,
    Root,
    Trip,
    TripZones,
    ValidationErrors,
    locate_trips,
    trip_columns,
)
from serve.settings import Settings, report_startup_failure
from stages.features import feature_matrix

SERVICE = "auto-ops green taxi trip duration"
# A trip is ~300 bytes of JSON; anything far beyond max_batch trips is refused before it is read.
BYTES_PER_TRIP = 1024

log = logging.getLogger("serve")
# Module level: FastAPI resolves the (postponed) annotations of dependencies in module scope.
bearer = HTTPBearer(auto_error=False, description="AUTOOPS_ADMIN_TOKEN")


def _json(data: Any, status_code: int = 200) -> Response:
    # orjson straight to bytes: FastAPI's response_model path would validate what we just built, and
    # its ORJSONResponse, which did exactly this, is deprecated (FastAPI 0.165: a FastAPIDeprecationWarning).
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body has streamed in past the limit.

    An HTTPException so that whoever is reading the body (our endpoints, or FastAPI for a route
    with body parameters, which turns other errors into a 400) answers 413 with it.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body over {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 for a body beyond any valid request, on every route, without reading it past the limit.

    With a Content-Length the answer comes before any of the body is read. Without one (chunked
    transfer) the body is counted as it streams in and reading stops at the limit: otherwise a
    large chunked body is buffered and parsed in full (seconds, and gigabytes of memory) before
    it could be refused. The rest of such a body is discarded by uvicorn as it arrives, and the
    connection stays usable, so the client reads the 413 rather than a reset.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = _json({"detail": f"request body over {self.max_bytes} bytes"}, 413)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    # One thread per worker for anything OpenMP (the sklearn fallback): workers scale across cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    metrics = ServiceMetrics()
    holder = ModelHolder(
        make_source(settings), settings, on_swap=metrics.model_swapped, on_error=metrics.model_load_failed
    )
    # The shared PostgreSQL log (several replicas) when configured, else the embedded SQLite file.
    log_url = settings.prediction_log_url
    log_target = log_url.get_secret_value() if log_url else settings.prediction_log
    prediction_log = (
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
    if prediction_log is not None:
        metrics.log_up.set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if prediction_log is not None:
                prediction_log.start()
        except Exception as exc:
            report_startup_failure(exc)
            raise
        holder.start()
        # Wait (bounded) for the first model so a fresh worker is ready when it accepts requests;
        # if the source is down the service still starts, not ready, and keeps trying.
        await asyncio.to_thread(holder.first_attempt.wait, settings.startup_timeout_s)
        yield
        holder.stop()
        if prediction_log is not None:
            prediction_log.close()

    app = FastAPI(
        title="Auto-Ops: NYC Green Taxi trip duration",
        version="1",
        description=(
            "Predicts a Green Taxi trip's duration in minutes from what a dispatcher knows at pickup. "
            f"`/predict_batch` takes at most **{settings.max_batch}** trips (413 beyond). "
            "Features are computed by the pipeline's own `stages/features.py`."
        ),
        lifespan=lifespan,
        # serve.docs serves /docs from local files (FastAPI's pages load a CDN); no ReDoc, see there.
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log

    def served_model() -> ServedModel:
        served = holder.current
        if served is None:
            raise HTTPException(503, f"no model loaded yet ({holder.last_error or 'loading'})")
        return served

    def predict(served: ServedModel, trips: list[Trip], located: TripZones | None) -> np.ndarray:
        features = feature_matrix(trip_columns(trips, located))
        predictions = served.predictor.predict(features)
        if prediction_log is not None:
            prediction_log.append(features, predictions, served.version)
        metrics.predictions.labels(served.version).inc(len(trips))
        return predictions

    unavailable = {503: {"model": Error, "description": "No model loaded yet"}}
    body_errors = {
        422: {
            "model": ValidationErrors,
            "description": "The body is not JSON or a field is invalid (named in loc)",
        },
        **unavailable,
    }

    @app.get("/", response_model=Root, summary="Service liveness and where to look next")
    async def root() -> Response:
        return _json(
            {
                "service": SERVICE,
                "status": "ok",
                "docs": "/docs",
                "endpoints": ["/health", "/predict", "/predict_batch", "/model/info", "/metrics", "/docs"],
            }
        )

    @app.get("/health", response_model=Health, summary="Liveness (always 200) and readiness (model_loaded)")
    async def health() -> Response:
        served = holder.current
        return _json(
            {
                "status": "ok",
                "model_loaded": served is not None,
                "model_version": served.version if served else None,
                "predictor": served.predictor.kind if served else None,
                # Still 200 and still ready: the old model keeps serving, which is the point. A
                # monitor that wants to know that a new version did not arrive reads these.
                "stale": holder.stale,
                "last_error": holder.last_error,
                # Still 200: a log sink that is down costs monitoring data, never a prediction.
                "prediction_log": prediction_log.status() if prediction_log is not None else None,
            }
        )

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=body_errors,
        openapi_extra=_json_body(Trip),
        summary="Predict one trip's duration in minutes",
    )
    async def predict_one(request: Request) -> Response:
        trip = _parse(Trip, await request.body())
        located = _locate([trip], batch=False)
        served = served_model()
        prediction = predict(served, [trip], located)
        answer = {"duration_min": float(prediction[0]), "model_version": served.version}
        if located is not None:
            answer.update(located.describe(0) or {})
        return _json(answer)

    @app.post(
        "/predict_batch",
        response_model=BatchPrediction,
        responses={
            413: {"model": BatchTooLarge, "description": f"More than max_batch ({settings.max_batch}) trips"},
            **body_errors,
        },
        openapi_extra=_json_body(BatchRequest),
        summary=f"Predict a list of trips (at most {settings.max_batch}), answers in request order",
    )
    async def predict_batch(request: Request) -> Response:
        batch = _parse(BatchRequest, await request.body())
        if len(batch.trips) > settings.max_batch:
            return _json(
                {
                    "detail": f"{len(batch.trips)} trips: over the limit of {settings.max_batch} per request",
                    "max_batch": settings.max_batch,
                },
                413,
            )
        located = _locate(batch.trips, batch=True)
        served = served_model()
        predictions = predict(served, batch.trips, located)
        answer = {
            "predictions": predictions.tolist(),
            "model_version": served.version,
            "count": len(predictions),
        }
        if located is not None:
            answer["zones"] = [located.describe(i) for i in range(len(predictions))]
        return _json(answer)

    @app.get("/model/info", response_model=ModelInfo, responses=unavailable, summary="The model being served")
    async def model_info() -> Response:
        served = served_model()
        card = served.card
        return _json(
            {
                "name": served.name,
                "version": served.version,
                "registry_version": served.registry_version,
                "model_uri": served.model_uri,
                "source": served.source,
                "model_type": card["model_type"],
                "training_months": card["training_months"],
                "reference_month": card["reference_month"],
                "features": card["features"],
                "categorical_features": card["categorical_features"],
                "metrics": card["holdout_metrics"],
                "training_rows": card["training_rows"],
                "model_sha256": card["model_sha256"],
                "predictor": served.predictor.kind,
                "loaded_at": served.loaded_at.isoformat(),
            }
        )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    def admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.admin_token is None:
            raise HTTPException(403, "admin endpoints are disabled: set AUTOOPS_ADMIN_TOKEN to enable them")
        expected = settings.admin_token.get_secret_value().encode()
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.post(
        "/admin/reload",
        response_model=ReloadResult,
        dependencies=[Depends(admin)],
        responses={
            401: {"model": Error, "description": "Missing or wrong bearer token"},
            403: {"model": Error, "description": "Admin endpoints disabled (no AUTOOPS_ADMIN_TOKEN)"},
            503: {"model": Error, "description": "The source has no loadable model; the old one is kept"},
        },
        summary="Load the source's current model now (atomic swap; other workers follow at their next watch)",
    )
    async def reload() -> Response:
        previous = holder.current
        try:
            served, swapped = await run_in_threadpool(holder.load)
        except Exception as exc:
            metrics.model_load_failed(exc)
            kept = f"; still serving {previous.version}" if previous else ""
            return _json({"detail": f"reload failed: {exc}{kept}"}, 503)
        return _json(
            {
                "reloaded": swapped,
                "model_version": served.version,
                "previous_version": previous.version if previous else None,
            }
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 shape, minus the echoed input (it can be a whole batch).
        errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_batch * BYTES_PER_TRIP + 65536)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _complete_openapi(app, settings.max_batch)
    return app


ModelT = TypeVar("ModelT", bound=BaseModel)


def _parse(model: type[ModelT], body: bytes) -> ModelT:
    """Validate a JSON body straight from bytes: pydantic's own parser does the JSON and the
    validation in one pass, half the cost of FastAPI's json.loads + validation for a batch.
    Errors are FastAPI's 422 (locations under "body")."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"type": err["type"], "loc": ("body", *err["loc"]), "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def _locate(trips: list[Trip], *, batch: bool) -> TripZones | None:
    """Zones of the trips given by coordinates; a point in no zone is a 422 naming it."""
    try:
        return locate_trips(trips)
    except OutsideZones as exc:
        errors = [
            {
                "type": "outside_taxi_zones",
                "loc": ("body", *(("trips", i) if batch else ()), f"{end}_longitude"),
                "msg": f"the {end} point ({lon}, {lat}) lies in no NYC taxi zone (in water or outside NYC)",
            }
            for i, end, lon, lat in exc.points
        ]
        raise RequestValidationError(errors) from None


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    # The request body as documented in OpenAPI (the endpoints read it themselves, see _parse).
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _complete_openapi(app: FastAPI, max_batch: int) -> None:
    """Add the request bodies' schemas, and max_batch as maxItems: clients and fuzzers see the
    limit, while the service enforces it itself, so an oversized batch is a 413 naming the limit."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Trip, BatchRequest):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            components["BatchRequest"]["properties"]["trips"]["maxItems"] = max_batch
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
