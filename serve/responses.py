"""The API's response bodies, as /docs shows them (the routes build the JSON themselves, with orjson:
see serve/routes.py's json_response; these models are the documentation of what they build).

The request bodies and their rules are serve/request_models.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Zone(BaseModel):
    location_id: int = Field(description="TLC taxi zone ID")
    zone: str
    borough: str


class Prediction(BaseModel):
    duration_min: float = Field(description="Predicted trip duration in minutes")
    model_version: str = Field(description="Version of the model that answered (see /model/info)")
    pickup_zone: Zone | None = Field(None, description="The zone the pickup coordinates fell in (if given)")
    dropoff_zone: Zone | None = Field(None, description="The zone the dropoff coordinates fell in (if given)")


class TripZonesOut(BaseModel):
    pickup_zone: Zone | None
    dropoff_zone: Zone | None


class BatchPrediction(BaseModel):
    predictions: list[float] = Field(description="Predicted durations in minutes, in request order")
    model_version: str = Field(description="The one model version that answered every trip")
    count: int
    zones: list[TripZonesOut | None] | None = Field(
        None,
        description="Only when some trip gave coordinates: per trip, in order, the zones its coordinates "
        "fell in (null for a trip given by zone IDs)",
    )


class PredictionLogHealth(BaseModel):
    sink: Literal["sqlite", "postgresql"] = Field(description="sqlite: this host's file; postgresql: shared")
    up: bool = Field(description="The sink accepts writes (false: rows wait in memory, bounded, and retry)")
    error: str | None = Field(None, description="Why the last write failed (null while it writes)")
    pending_rows: int = Field(description="Rows waiting to be written by this worker")
    written_rows: int = Field(description="Rows this worker wrote")
    dropped_rows: int = Field(description="Rows this worker could not keep (queue full or write failed)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_loaded: bool = Field(description="Ready: a model is loaded and /predict answers")
    model_version: str | None = None
    predictor: Literal["compiled", "sklearn"] | None = Field(
        None, description="compiled: native trees (fast); sklearn: the estimator (fallback)"
    )
    stale: bool = Field(
        False,
        description="The source holds a model that could not be loaded: the one named here keeps "
        "serving (last_error says why; autoops_model_load_failures_total counts the attempts)",
    )
    last_error: str | None = Field(
        None, description="Why the source's current model was not loaded (null: it was)"
    )
    prediction_log: PredictionLogHealth | None = Field(
        None, description="This worker's prediction log (null: logging is off)"
    )


class Root(BaseModel):
    service: str
    status: Literal["ok"] = "ok"
    docs: str = "/docs"
    endpoints: list[str]


class ModelInfo(BaseModel):
    name: str = Field(description="Registered model name")
    version: str = Field(description="Model version (sha256 prefix of the model file), as /predict reports")
    registry_version: str | None = Field(None, description="MLflow registered model version, when known")
    model_uri: str | None = Field(None, description="MLflow URI of this version, when known")
    source: str = Field(description="Where it was loaded from: a models/ folder or an MLflow URI")
    model_type: str
    training_months: list[str] = Field(description="Months the model learned from")
    reference_month: str
    features: list[str]
    categorical_features: list[str]
    metrics: dict[str, float] = Field(description="Evaluation on the reference holdout (model card)")
    training_rows: int
    model_sha256: str
    predictor: Literal["compiled", "sklearn"]
    loaded_at: datetime


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="False when the source still holds the model being served")
    model_version: str
    previous_version: str | None


class Error(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where: ["body", field] or ["body", "trips", index, field]')
    msg: str
    type: str


class ValidationErrors(BaseModel):
    detail: list[FieldError] = Field(description="The first max_errors errors (AUTOOPS_MAX_ERRORS)")
    errors_omitted: int | None = Field(None, description="How many more errors there were, if any")


class BatchTooLarge(BaseModel):
    detail: str
    max_batch: int
