"""Request and response bodies of the API (they are also its OpenAPI schema at /docs).

A trip is what a dispatcher knows at pickup: zones, the route planner's distance, the pickup time
(a timestamp, or hour + weekday), and optionally the fields the features use (vendor, rate code,
trip type, passengers). :func:`trip_columns` turns trips into the raw columns
:func:`core.features.feature_matrix` takes, so the service computes features exactly as training did.

Numbers are strict (``"3"`` is not 3 and ``true`` is not 1; 3.0 is 3, as in JSON Schema) and unknown
fields are refused, so a
client's typo is a 422 naming the field rather than a silently different prediction.

Size (~580 lines): declarations, mostly: every field with its constraint and the description /docs
shows. One module, so the API's whole contract reads in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    model_validator,
)

from core.features import INPUT_COLUMNS, ZONE_ID_RANGE
from serve.zones import zones

# TLC timestamps are New York wall-clock time; an offset-aware pickup time is converted to it.
NYC = ZoneInfo("America/New_York")
# Any year works for hour + weekday input (the features do not use the year); one is needed to
# build a timestamp feature_matrix can take.
_SYNTHETIC_YEAR = 2024


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer is any number without a fractional part (170.0 is 170), but a boolean
    # is not one (Python would take True as 1). Runs for every integer field of every trip of a
    # batch, so the common case (a plain int) returns first.
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le] (the bounds inside, so they also reach the JSON schema)."""
    return Annotated[int, Strict(), Field(ge=ge, le=le), BeforeValidator(_json_integer)]


def json_enum(*values: int) -> Any:
    return Annotated[Literal[values], BeforeValidator(_json_integer)]


# NaN and Infinity (which JSON parsers accept) are refused as what they are, not as "over 100".
StrictFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
PICKUP_YEARS = (2000, 2099)
ZoneId = json_int(*ZONE_ID_RANGE)


# ISO 8601 extended form (RFC 3339's profile of it, seconds and offset optional): a date-time,
# never a bare number (pydantic would take "1700000000" as a Unix timestamp) nor the basic form
# ("20240115"). The same pattern is the schema's, so clients and fuzzers know it.
_ISO_AFTER_YEAR = (
    r"-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
ISO_DATETIME = "[0-9]{4}" + _ISO_AFTER_YEAR
_ISO_DATETIME = re.compile(ISO_DATETIME)
_ISO_MESSAGE = (
    "must be an ISO 8601 date-time in extended form, YYYY-MM-DDThh:mm[:ss[.ffffff]][Z|+hh:mm], "
    "e.g. 2021-01-15T08:30:00"
)


def _iso_string(value: Any) -> Any:
    if type(value) is str:
        # By the separators' positions (pydantic's parser checks the digits and knows no basic-form
        # date): a regex per trip would cost half a millisecond per 1000-trip batch. What this lets
        # through that pydantic would also take is extended form, but for a basic-form offset
        # (+0500): that, and every other shape, goes to the full pattern.
        if len(value) >= 16 and value[10] in "Tt " and value[13] == ":" and value[-5] not in "+-":
            return value
        if _ISO_DATETIME.fullmatch(value):
            return value
        raise ValueError(_ISO_MESSAGE)
    if isinstance(value, datetime):
        return value
    # A number is far more likely a client bug than a timestamp.
    raise ValueError("must be an ISO 8601 date-time string, e.g. 2021-01-15T08:30:00")


def _not_null(value: Any) -> Any:
    # The pickup-time fields are either given or left out; a null would hide which way was meant.
    if value is None:
        raise ValueError("leave the field out instead of sending null")
    return value


def _omit_not_null(schema: dict[str, Any]) -> None:
    """Schema of a field that may be left out but not null: just its non-null type."""
    for branch in schema.pop("anyOf", []):
        if branch.get("type") != "null":
            schema.update(branch)
    schema.pop("default", None)


def _optional(description: str) -> Any:
    """A field that may be left out but not sent as null (its schema: just the non-null type)."""
    return Field(None, json_schema_extra=_omit_not_null, description=description)


def _new_york_time(value: datetime) -> datetime:
    # A bounded year keeps the conversion defined (0001-01-01T03:00Z is in year 0 in New York) and
    # catches garbage; the schema says the same with a pattern, so clients and fuzzers know it.
    if not PICKUP_YEARS[0] <= value.year <= PICKUP_YEARS[1]:
        raise ValueError(f"the year must be {PICKUP_YEARS[0]}-{PICKUP_YEARS[1]}")
    if value.tzinfo:
        return value.astimezone(NYC).replace(tzinfo=None)
    # New York wall-clock time, as TLC records it. A time the clocks skipped (the spring-forward
    # hour, 02:00-03:00 on a March - before 2007 April - Sunday) never happened: refused. A time they
    # showed twice (01:00-02:00 in the autumn) is taken as that wall-clock time: the features are
    # the clock's hour and weekday, the same for both readings.
    if value.hour == 2 and value.month in (3, 4) and _skipped(value):
        raise ValueError(
            f"{value.isoformat()} does not exist in New York (the clocks went from 02:00 to 03:00 "
            "that night): give the time the clock showed, or an offset"
        )
    return value


def _skipped(value: datetime) -> bool:
    there = value.replace(tzinfo=NYC)
    return there.astimezone(UTC).astimezone(NYC).replace(tzinfo=None) != value


def _pickup_datetime_schema(schema: dict[str, Any]) -> None:
    _omit_not_null(schema)
    schema["pattern"] = f"^20[0-9]{{2}}{_ISO_AFTER_YEAR}$"


PickupDatetime = Annotated[datetime | None, BeforeValidator(_iso_string), AfterValidator(_new_york_time)]
Longitude = Annotated[Annotated[StrictFloat, Field(ge=-180, le=180)] | None, BeforeValidator(_not_null)]
Latitude = Annotated[Annotated[StrictFloat, Field(ge=-90, le=90)] | None, BeforeValidator(_not_null)]
OptionalZoneId = Annotated[ZoneId | None, BeforeValidator(_not_null)]
Hour = Annotated[Annotated[StrictFloat, Field(ge=0, lt=24)] | None, BeforeValidator(_not_null)]
Weekday = Annotated[json_int(0, 6) | None, BeforeValidator(_not_null)]
Month = Annotated[json_int(1, 12) | None, BeforeValidator(_not_null)]


def _zone_or_point(zone: str, lon: str, lat: str) -> dict[str, Any]:
    return {
        "oneOf": [
            {"required": [zone], "not": {"anyOf": [{"required": [lon]}, {"required": [lat]}]}},
            {"required": [lon, lat], "not": {"required": [zone]}},
        ]
    }


# The original Auto-Ops API's names for the hour + weekday fields (its README's example request),
# accepted as written so that its clients need no rewrite: this API's name for each.
SEED_NAMES: dict[str, str] = {"hour": "pickup_hour", "day_of_week": "pickup_dow", "month": "pickup_month"}
_TIME_FIELDS = ("pickup_datetime", "pickup_hour", "pickup_dow", "pickup_month", *SEED_NAMES)


def _only(*fields: str) -> dict[str, Any]:
    """A JSON Schema branch: ``fields[:2]`` required (``fields[:1]`` for pickup_datetime) and no
    other pickup-time field."""
    required = list(fields[:1] if fields[0] == "pickup_datetime" else fields[:2])
    others = [f for f in _TIME_FIELDS if f not in fields]
    return {"required": required, "not": {"anyOf": [{"required": [f]} for f in others]}}


_PICKUP_TIME_SCHEMA: dict[str, Any] = {
    # Exactly one way of giving the pickup time; as JSON Schema so /docs and fuzzers know it.
    "oneOf": [
        _only("pickup_datetime"),
        _only("pickup_hour", "pickup_dow", "pickup_month"),
        _only("hour", "day_of_week", "month"),
    ],
}
# The original Auto-Ops request exactly as its README gave it: by coordinates, Midtown South (zone
# 164) to Clinton East (48), with its own field names. The third example in /docs; the tests send it.
SEED_TRIP: dict[str, Any] = {
    "pickup_longitude": -73.9857,
    "pickup_latitude": 40.7484,
    "dropoff_longitude": -73.9881,
    "dropoff_latitude": 40.7614,
    "passenger_count": 2,
    "trip_distance": 2.5,
    "hour": 14,
    "day_of_week": 1,
    "month": 6,
}
_TRIP_SCHEMA: dict[str, Any] = {
    # Each end of the trip as a zone ID or as coordinates; the pickup time one way or the other.
    "allOf": [
        _zone_or_point("pu_location_id", "pickup_longitude", "pickup_latitude"),
        _zone_or_point("do_location_id", "dropoff_longitude", "dropoff_latitude"),
        _PICKUP_TIME_SCHEMA,
    ],
    "examples": [
        {
            "pu_location_id": 74,
            "do_location_id": 168,
            "trip_distance": 2.3,
            "pickup_datetime": "2021-01-15T08:30:00",
            "vendor_id": 2,
            "passenger_count": 1,
        },
        {
            "pu_location_id": 41,
            "do_location_id": 42,
            "trip_distance": 0.9,
            "pickup_hour": 17.5,
            "pickup_dow": 4,
        },
        SEED_TRIP,
    ],
}


_PICKUP_TIME_MESSAGE = (
    "give the pickup time either as pickup_datetime or as pickup_hour + pickup_dow "
    "(+ optional pickup_month), not both and not neither"
)
# The same, to a client that used the original API's names.
_SEED_PICKUP_TIME_MESSAGE = (
    "give the pickup time either as pickup_datetime or as hour + day_of_week "
    "(+ optional month), not both and not neither"
)


def _seed_names_message(given: list[str]) -> str | None:
    """Why a trip's pickup-time names are ambiguous (None: they are not)."""
    for seed, ours in SEED_NAMES.items():
        if seed in given and ours in given:
            return (
                f"{seed} and {ours} are the same field (the original API's name and this one's): "
                "give one of them"
            )
    mixed = [f for f in given if f in SEED_NAMES or f in SEED_NAMES.values()]
    if any(f in SEED_NAMES for f in mixed) and any(f in SEED_NAMES.values() for f in mixed):
        return (
            "give hour + weekday with one set of names, pickup_hour + pickup_dow (+ pickup_month) "
            f"or the original API's hour + day_of_week (+ month), not a mix (got {', '.join(mixed)})"
        )
    return None


def _zone_or_point(end: str, prefix: str, zone: int | None, lon: float | None, lat: float | None) -> None:
    if (zone is None) == (lon is None or lat is None) or (lon is None) != (lat is None):
        raise ValueError(
            f"give the {end} either as {prefix}_location_id or as {end}_longitude + {end}_latitude, "
            "not both and not neither"
        )


class Trip(BaseModel):
    """One trip, as known at pickup."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_TRIP_SCHEMA)

    pu_location_id: OptionalZoneId = _optional("Pickup TLC taxi zone ID (1-265), or give the coordinates")
    do_location_id: OptionalZoneId = _optional("Dropoff TLC taxi zone ID (1-265), or give the coordinates")
    pickup_longitude: Longitude = _optional(
        "Pickup longitude (WGS84), with pickup_latitude; mapped to its taxi zone"
    )
    pickup_latitude: Latitude = _optional("Pickup latitude (WGS84)")
    dropoff_longitude: Longitude = _optional(
        "Dropoff longitude (WGS84), with dropoff_latitude; mapped to its taxi zone"
    )
    dropoff_latitude: Latitude = _optional("Dropoff latitude (WGS84)")
    trip_distance: StrictFloat = Field(
        gt=0, le=100, description="Trip distance in miles (the route planner's estimate), 0 < d <= 100"
    )
    pickup_datetime: PickupDatetime = Field(
        None,
        json_schema_extra=_pickup_datetime_schema,
        description="Pickup time, ISO 8601 extended form (2021-01-15T08:30:00, seconds and offset "
        "optional), years 2000-2099. Without an offset it is New York local time (as in TLC data): "
        "a time the spring-forward change skipped is refused, an autumn time that occurred twice is "
        "that wall-clock time. With an offset it is converted. Give this, or pickup_hour + pickup_dow.",
    )
    pickup_hour: Hour = _optional("Pickup hour of day, local time; fractions are minutes (17.5 = 17:30)")
    pickup_dow: Weekday = _optional("Pickup day of week, Monday = 0")
    pickup_month: Month = _optional("Pickup month (optional with hour + weekday)")
    hour: Hour = _optional("The original Auto-Ops API's name for pickup_hour (give one of the two)")
    day_of_week: Weekday = _optional(
        "The original Auto-Ops API's name for pickup_dow, numbered the same way: Monday = 0 ... "
        "Sunday = 6 (pandas' dayofweek, which the pipeline's features and so the model use; 1 is "
        "a Tuesday, not ISO's Monday)"
    )
    month: Month = _optional("The original Auto-Ops API's name for pickup_month")
    vendor_id: json_enum(1, 2, 6) | None = Field(
        None, description="TLC VendorID: 1 Creative Mobile, 2 Curb, 6 Myle; null = unknown"
    )
    ratecode_id: json_enum(1, 2, 3, 4, 5, 6, 99) | None = Field(
        None, description="TLC RatecodeID: 1 standard ... 6 group ride, 99 unknown; null = unknown"
    )
    trip_type: json_enum(1, 2) | None = Field(None, description="1 street-hail, 2 dispatch; null = unknown")
    passenger_count: json_int(0, 9) | None = Field(None, description="Passengers (0-9); null = unknown")

    @model_validator(mode="after")
    def _consistent(self) -> Trip:
        # One validator of plain comparisons: it runs for every trip of a batch.
        if (
            self.pu_location_id is None
            or self.pickup_longitude is not None
            or self.pickup_latitude is not None
        ):
            _zone_or_point("pickup", "pu", self.pu_location_id, self.pickup_longitude, self.pickup_latitude)
        if (
            self.do_location_id is None
            or self.dropoff_longitude is not None
            or self.dropoff_latitude is not None
        ):
            _zone_or_point(
                "dropoff", "do", self.do_location_id, self.dropoff_longitude, self.dropoff_latitude
            )
        message = _PICKUP_TIME_MESSAGE
        if self.hour is not None or self.day_of_week is not None or self.month is not None:
            self._take_seed_names()
            message = _SEED_PICKUP_TIME_MESSAGE
        if self.pickup_datetime is None:
            if self.pickup_hour is None or self.pickup_dow is None:
                raise ValueError(message)
        elif self.pickup_hour is not None or self.pickup_dow is not None or self.pickup_month is not None:
            raise ValueError(message)
        return self

    def _take_seed_names(self) -> None:
        # The original API's names (rare): refuse an ambiguous mix, then hold the values under this
        # API's names, which everything downstream reads.
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if message := _seed_names_message(given):
            raise ValueError(message)
        for seed, ours in SEED_NAMES.items():
            object.__setattr__(self, ours, getattr(self, seed))

    @property
    def has_coordinates(self) -> bool:
        return self.pickup_longitude is not None or self.dropoff_longitude is not None

    def pickup_local(self) -> datetime:
        """The pickup as a naive New York timestamp, the form the features are computed from."""
        if self.pickup_datetime is not None:
            return self.pickup_datetime  # already New York time (see _new_york_time)
        day = date(_SYNTHETIC_YEAR, self.pickup_month or 1, 1)
        day += timedelta(days=(self.pickup_dow - day.weekday()) % 7)
        # Whole microseconds, truncated: 23.999999999999996 h stays on that day (rounding would
        # carry it into the next, and its weekday).
        micros = min(int(self.pickup_hour * 3_600_000_000), _MICROS_PER_DAY - 1)
        return datetime(day.year, day.month, day.day) + timedelta(microseconds=micros)


# core.features.INPUT_COLUMNS (TLC's names) <- the API's field names.
INPUT_FIELDS: dict[str, str] = {
    "PULocationID": "pu_location_id",
    "DOLocationID": "do_location_id",
    "trip_distance": "trip_distance",
    "VendorID": "vendor_id",
    "RatecodeID": "ratecode_id",
    "trip_type": "trip_type",
    "passenger_count": "passenger_count",
}
assert set(INPUT_FIELDS) | {"lpep_pickup_datetime"} == set(INPUT_COLUMNS)


_input_values = attrgetter(*INPUT_FIELDS.values())
_EPOCH = datetime(1970, 1, 1)
_MICROS_PER_DAY = 86_400_000_000


class OutsideZones(ValueError):
    """Coordinates that lie in no taxi zone: (trip index, "pickup" | "dropoff", lon, lat) each."""

    def __init__(self, points: list[tuple[int, str, float, float]]) -> None:
        self.points = points
        super().__init__(
            "; ".join(f"trip {i}: {end} ({lon}, {lat}) is in no NYC taxi zone" for i, end, lon, lat in points)
        )


@dataclass(frozen=True)
class TripZones:
    """The zones that coordinate trips fell in (index into :func:`serve.zones.zones`; -1: the trip
    gave a zone ID there)."""

    pickup: np.ndarray
    dropoff: np.ndarray

    def describe(self, i: int) -> dict[str, Any] | None:
        if self.pickup[i] < 0 and self.dropoff[i] < 0:
            return None
        table = zones()
        return {
            end: table.describe(int(index)) if index >= 0 else None
            for end, index in (("pickup_zone", self.pickup[i]), ("dropoff_zone", self.dropoff[i]))
        }


def locate_trips(trips: Sequence[Trip]) -> TripZones | None:
    """Map the trips given by coordinates to taxi zones (None: no trip was); raises OutsideZones."""
    if not any(t.has_coordinates for t in trips):
        return None
    ends: dict[str, np.ndarray] = {}
    outside: list[tuple[int, str, float, float]] = []
    for end in ("pickup", "dropoff"):
        index = [i for i, t in enumerate(trips) if getattr(t, f"{end}_longitude") is not None]
        lon = np.array([getattr(trips[i], f"{end}_longitude") for i in index], np.float64)
        lat = np.array([getattr(trips[i], f"{end}_latitude") for i in index], np.float64)
        found = np.full(len(trips), -1, dtype=np.intp)
        if index:
            located = zones().locate(lon, lat)
            found[index] = located
            outside += [(index[k], end, lon[k], lat[k]) for k in np.flatnonzero(located < 0)]
        ends[end] = found
    if outside:
        raise OutsideZones(sorted(outside))
    return TripZones(ends["pickup"], ends["dropoff"])


def trip_columns(trips: Sequence[Trip], located: TripZones | None = None) -> dict[str, Any]:
    """Raw input columns for :func:`core.features.feature_matrix` (None becomes NaN: unknown).

    Trips given by coordinates need their zones: ``located`` (from :func:`locate_trips`), else
    they are located here."""
    # One array for the numbers and integer microseconds for the timestamps: numpy's conversion of
    # datetime objects costs more than the rest of a 1000-trip batch together.
    values = np.array([_input_values(t) for t in trips], dtype=np.float64).reshape(
        len(trips), len(INPUT_FIELDS)
    )
    located = located or locate_trips(trips)
    if located is not None:
        table = zones()
        for column, found in ((0, located.pickup), (1, located.dropoff)):
            given = found >= 0
            values[given, column] = table.location_id[found[given]]
    columns: dict[str, Any] = dict(zip(INPUT_FIELDS, values.T, strict=True))
    micros = []
    for trip in trips:
        delta = trip.pickup_local() - _EPOCH
        micros.append((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    columns["lpep_pickup_datetime"] = np.array(micros, dtype=np.int64).view("datetime64[us]")
    return columns


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trips: list[Trip] = Field(min_length=1, description="Trips to predict, at most the service's max_batch")


# The original Auto-Ops API's batch form: the trips as a bare JSON array (errors are located at
# ["body", index, field] then).
TripList = Annotated[list[Trip], Field(min_length=1)]
TRIP_LIST: TypeAdapter[list[Trip]] = TypeAdapter(TripList)


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
