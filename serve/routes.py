"""The HTTP API: one plain function per endpoint, and :func:`add_api_routes`, which routes them with
their OpenAPI texts.

How a request is validated: the checks a /predict or /predict_batch request passes, in order (the
first it fails answers; every 422 has FastAPI's shape, ``detail[].loc`` naming the place, rendered
by serve/app.py's ``validation_error``):

1. request head: size 431, deadlines 408, connection cap - serve/http_protocol.py,
   ``GuardedHttpToolsProtocol`` (uvicorn's protocol, before the application sees anything);
2. body size 413, ``Content-Encoding`` 415, content type 415 (JSON, or curl's form type without an
   ``Origin``) - serve/app.py, ``RequestChecksMiddleware._refusal`` on the headers, and its
   ``limited_receive`` while a body without a length streams in;
3. a bound on fields: more ``:`` than the trips a body may hold can have fields, 422
   ``too_many_fields`` - serve/request_body.py, ``BodyReader._bound_fields``;
4. the batch's form: ``{"trips": [...]}`` or the original API's bare array - ``BodyReader.trips``;
5. for a batch, the columnar path first - serve/batch_columns.py, ``ColumnarDecoder.decode``: the
   body decoded into columns (msgspec) and checked column-wise (NumPy) against the declarations
   of serve/request_models.py; it only accepts, and whatever it does not accept (an invalid trip,
   a form it does not take, a key it cannot rule out as given twice) goes on to 6-7, so every
   refusal below is theirs;
6. JSON decoding (422 ``json_invalid``), batch size (413 naming the count, checked on the array
   before any trip), per-trip validation (each field's type and bounds, then the either/or rules:
   serve/request_models.py, ``Trip`` and ``refusal``), the errors capped at ``max_errors`` with
   ``errors_omitted`` - one pydantic pass over the bytes, ``BodyReader._validate``;
7. duplicate keys, 422 ``duplicate_key`` - serve/request_body.py, ``_refuse_duplicates``;
8. coordinates in a taxi zone, 422 ``outside_taxi_zones`` - :func:`_locate` here, with
   serve/zones.py's ``locate_points``;
9. a model loaded, else 503 - serve/service.py, ``Service.served_model``.

A /predict trip given by zone IDs is answered before FastAPI's routing, by serve/one_trip_route.py
(after 1-2, which apply to it too): decoded and checked by msgspec (serve/one_trip_decoder.py), it
only accepts, like 5; whatever it does not accept comes here, with its body replayed, for 3-9.

The endpoints reach the running service (model holder, metrics, prediction log) through the request
(:func:`serve.service.service_of`), not by closure. They are routed per app because
``/predict_batch``'s texts state the app's ``max_batch`` setting.

Predictions run inline on the event loop: a compiled prediction costs microseconds, far less than
a thread hand-off would. The prediction endpoints read their bodies themselves (no FastAPI body
parameter: see serve/request_body.py); :func:`complete_openapi` documents them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from serve.request_body import TooManyTrips
from serve.request_models import SEED_TRIP, BatchRequest, Trip
from serve.responses import (
    BatchPrediction,
    BatchTooLarge,
    Error,
    Health,
    ModelInfo,
    Prediction,
    ReloadResult,
    Root,
    ValidationErrors,
)
from serve.service import service_of
from serve.trip_columns import locate_trips
from serve.zones import OutsideZones, TripZones

SERVICE = "auto-ops green taxi trip duration"

# Module level: FastAPI resolves the (postponed) annotations of dependencies in module scope.
bearer = HTTPBearer(auto_error=False, description="AUTOOPS_ADMIN_TOKEN")


def json_response(data: Any, status_code: int = 200) -> Response:
    # orjson straight to bytes: FastAPI's response_model path would validate what we just built, and
    # its ORJSONResponse, which did exactly this, is deprecated (FastAPI 0.165: a FastAPIDeprecationWarning).
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


async def root() -> Response:
    return json_response(
        {
            "service": SERVICE,
            "status": "ok",
            "docs": "/docs",
            "endpoints": ["/health", "/predict", "/predict_batch", "/model/info", "/metrics", "/docs"],
        }
    )


async def health(request: Request) -> Response:
    service = service_of(request)
    served = service.holder.current
    prediction_log = service.prediction_log
    return json_response(
        {
            "status": "ok",
            "model_loaded": served is not None,
            "model_version": served.version if served else None,
            "predictor": served.predictor.kind if served else None,
            # Still 200 and still ready: the old model keeps serving, which is the point. A
            # monitor that wants to know that a new version did not arrive reads these.
            "stale": service.holder.stale,
            "last_error": service.holder.last_error,
            # Still 200: a log sink that is down costs monitoring data, never a prediction.
            "prediction_log": prediction_log.status() if prediction_log is not None else None,
        }
    )


async def predict_one(request: Request) -> Response:
    service = service_of(request)
    trip = service.bodies.trip(await request.body())
    located = _locate(lambda: locate_trips([trip]), where=None)
    served = service.served_model()
    answer = {"duration_min": service.predict_trip(served, trip, located), "model_version": served.version}
    if located is not None:
        answer.update(located.describe(0) or {})
    return json_response(answer)


async def predict_batch(request: Request) -> Response:
    service = service_of(request)
    max_batch = service.settings.max_batch
    try:
        batch, where = service.bodies.trips(await request.body())
    except TooManyTrips as exc:
        return json_response(
            {
                "detail": f"{exc.count} trips: over the limit of {max_batch} per request",
                "max_batch": max_batch,
            },
            413,
        )
    located = _locate(batch.locate, where=where)
    served = service.served_model()
    predictions = service.predict(served, batch, located)
    answer = {
        "predictions": predictions.tolist(),
        "model_version": served.version,
        "count": len(predictions),
    }
    if located is not None:
        answer["zones"] = [located.describe(i) for i in range(len(predictions))]
    return json_response(answer)


async def model_info(request: Request) -> Response:
    served = service_of(request).served_model()
    card = served.card
    return json_response(
        {
            "name": served.name,
            "version": served.version,
            "registry_version": served.registry_version,
            "model_uri": served.model_uri,
            "source": served.source,
            "model_type": card.model_type,
            "training_months": card.training_months,
            "reference_month": card.reference_month,
            "features": card.features,
            "categorical_features": card.categorical_features,
            "metrics": card.holdout_metrics.as_dict(),
            "training_rows": card.training_rows,
            "model_sha256": card.model_sha256,
            "predictor": served.predictor.kind,
            "loaded_at": served.loaded_at.isoformat(),
        }
    )


async def prometheus_metrics(request: Request) -> Response:
    body, content_type = service_of(request).metrics.exposition()
    return Response(body, media_type=content_type)


def admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """The admin routes' guard: 403 while no AUTOOPS_ADMIN_TOKEN is set, else 401 without it."""
    token = service_of(request).settings.admin_token
    if token is None:
        raise HTTPException(403, "admin endpoints are disabled: set AUTOOPS_ADMIN_TOKEN to enable them")
    expected = token.get_secret_value().encode()
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


async def reload(request: Request) -> Response:
    service = service_of(request)
    previous = service.holder.current
    try:
        served, swapped = await run_in_threadpool(service.holder.load)
    except Exception as exc:
        service.metrics.model_load_failed(exc)
        kept = f"; still serving {previous.version}" if previous else ""
        return json_response({"detail": f"reload failed: {exc}{kept}"}, 503)
    return json_response(
        {
            "reloaded": swapped,
            "model_version": served.version,
            "previous_version": previous.version if previous else None,
        }
    )


def add_api_routes(router: APIRouter, max_batch: int) -> None:
    """Route every endpoint on ``router`` with its OpenAPI texts (in this order in /docs)."""
    unavailable = {503: {"model": Error, "description": "No model loaded yet"}}
    body_errors = {
        415: {"model": Error, "description": "The body is not sent as application/json, or is compressed"},
        422: {
            "model": ValidationErrors,
            "description": "The body is not JSON, gives a field twice, or a field is invalid (named in loc)",
        },
        **unavailable,
    }
    router.add_api_route(
        "/", root, methods=["GET"], response_model=Root, summary="Service liveness and where to look next"
    )
    router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=Health,
        summary="Liveness (always 200) and readiness (model_loaded)",
    )
    router.add_api_route(
        "/predict",
        predict_one,
        methods=["POST"],
        response_model=Prediction,
        responses=body_errors,
        openapi_extra=_json_body(Trip),
        summary="Predict one trip's duration in minutes",
    )
    router.add_api_route(
        "/predict_batch",
        predict_batch,
        methods=["POST"],
        response_model=BatchPrediction,
        responses={
            413: {"model": BatchTooLarge, "description": f"More than max_batch ({max_batch}) trips"},
            **body_errors,
        },
        openapi_extra=_batch_body(max_batch),
        summary=f"Predict a list of trips (at most {max_batch}), answers in request order",
    )
    router.add_api_route(
        "/model/info",
        model_info,
        methods=["GET"],
        response_model=ModelInfo,
        responses=unavailable,
        summary="The model being served",
    )
    router.add_api_route(
        "/metrics",
        prometheus_metrics,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    router.add_api_route(
        "/admin/reload",
        reload,
        methods=["POST"],
        response_model=ReloadResult,
        dependencies=[Depends(admin)],
        responses={
            401: {"model": Error, "description": "Missing or wrong bearer token"},
            403: {"model": Error, "description": "Admin endpoints disabled (no AUTOOPS_ADMIN_TOKEN)"},
            503: {"model": Error, "description": "The source has no loadable model; the old one is kept"},
        },
        summary="Load the source's current model now (atomic swap; other workers follow at their next watch)",
    )


def _locate(locate: Callable[[], TripZones | None], *, where: tuple[str, ...] | None) -> TripZones | None:
    """Zones of the trips given by coordinates (``locate`` finds them); a point in no zone is a
    422 naming it (``where``: the trips' place in a batch body, None for one trip)."""
    try:
        return locate()
    except OutsideZones as exc:
        errors = [
            {
                "type": "outside_taxi_zones",
                "loc": ("body", *((*where, i) if where is not None else ()), f"{end}_longitude"),
                "msg": f"the {end} point ({lon}, {lat}) lies in no NYC taxi zone (in water or outside NYC)",
            }
            for i, end, lon, lat in exc.points
        ]
        raise RequestValidationError(errors) from None


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    # The request body as documented in OpenAPI (the endpoints read it themselves, see parse_body).
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _batch_body(max_batch: int) -> dict[str, Any]:
    # {"trips": [...]}, or the original Auto-Ops API's bare array of trips (its clients unchanged).
    trip = {"$ref": "#/components/schemas/Trip"}
    schema = {
        "anyOf": [
            {"$ref": "#/components/schemas/BatchRequest"},
            {"type": "array", "items": trip, "minItems": 1, "maxItems": max_batch},
        ]
    }
    examples = {
        "trips": {
            "summary": "An object with the trips",
            "value": {"trips": [_EXAMPLE_TRIP, SEED_TRIP]},
        },
        "bare array": {
            "summary": "The original Auto-Ops API's form: a bare array of trips",
            "value": [SEED_TRIP, _EXAMPLE_TRIP],
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "examples": examples}},
        }
    }


_EXAMPLE_TRIP = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}


def complete_openapi(app: FastAPI, max_batch: int) -> None:
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
