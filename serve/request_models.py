"""How a request's trips are validated: the request models and their rules, one declaration each,
from which both the JSON Schema (/docs, clients, fuzzers) and the check derive.

A trip is what a dispatcher knows at pickup: zones, the route planner's distance, the pickup time
(a timestamp, or hour + weekday), and optionally the fields the features use (vendor, rate code,
trip type, passengers).

- **Each field**: a pydantic annotation (type, bounds, null or not), which is also its schema.
  Numbers are strict (``"3"`` is not 3 and ``true`` is not 1; 3.0 is 3, as in JSON Schema) and
  unknown fields are refused, so a client's typo is a 422 naming the field rather than a silently
  different prediction.
- **The either/or rules** (each end a zone ID or a point; the pickup time one way, under this API's
  names or the original API's): each a :class:`OneOf`, whose ``json_schema()`` is the schema's
  ``oneOf`` and whose ``way()`` is the check :class:`Trip`'s one model validator runs. Which
  rule a trip breaks depends only on which fields it gives, so the verdict is cached per field set.

What is checked around these (body size, content type, duplicate keys, batch size, ...) and in
which order: serve/routes.py's docstring. Batches of trips in the common shape are checked by
serve/batch_columns.py, column-wise, against the same declarations; anything it does not accept
comes back here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
    model_validator,
)

from core.features import ZONE_ID_RANGE

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


@dataclass(frozen=True)
class Way:
    """One way of giving what a :class:`OneOf` rule is about: these fields required, those optional."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional

    def describe(self) -> str:
        return " + ".join(self.required) + "".join(f" (+ optional {f})" for f in self.optional)


@dataclass(frozen=True)
class OneOf:
    """Exactly one way, complete, and no field of another: the rule both halves derive from.

    ``json_schema()`` is the schema's ``oneOf`` (a branch per way: its required fields, and none of
    the rule's other fields); ``way(given)`` applies the same to the names of the fields a trip
    gives (:func:`refusal`), and ``holds(given)`` to a batch's columns (serve/batch_columns.py)."""

    what: str
    ways: tuple[Way, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for way in self.ways for f in way.fields))

    def json_schema(self) -> dict[str, Any]:
        branches = []
        for way in self.ways:
            others = [{"required": [f]} for f in self.fields if f not in way.fields]
            branches.append(
                {"required": list(way.required), "not": others[0] if len(others) == 1 else {"anyOf": others}}
            )
        return {"oneOf": branches}

    def way(self, given: frozenset[str]) -> Way | None:
        """The way ``given`` (the names of the fields a trip gives) follows; None: it breaks the rule."""
        for way in self.ways:
            if given.issuperset(way.required) and given.isdisjoint(
                f for f in self.fields if f not in way.fields
            ):
                return way
        return None

    def holds(self, given: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`way` for a batch's columns (``given``: per field, which trips give it): which
        trips keep the rule."""
        kept = np.zeros(len(given[self.fields[0]]), dtype=bool)
        for way in self.ways:
            follows = np.ones_like(kept)
            for f in way.required:
                follows &= given[f]
            for f in self.fields:
                if f not in way.fields:
                    follows &= ~given[f]
            kept |= follows
        return kept

    def message(self, given: frozenset[str]) -> str:
        # The first way, and the other way the trip's fields point to (the second by default).
        other = next((w for w in self.ways[1:] if not given.isdisjoint(w.fields)), self.ways[1])
        return (
            f"give the {self.what} either as {self.ways[0].describe()} or as {other.describe()}, "
            "not both and not neither"
        )


def _end(end: str, zone: str) -> OneOf:
    return OneOf(end, (Way((zone,)), Way((f"{end}_longitude", f"{end}_latitude"))))


# The original Auto-Ops API's names for the hour + weekday fields (its README's example request),
# accepted as written so that its clients need no rewrite: this API's name for each.
SEED_NAMES: dict[str, str] = {"hour": "pickup_hour", "day_of_week": "pickup_dow", "month": "pickup_month"}
PICKUP_TIME_WAYS = (
    Way(("pickup_datetime",)),
    Way(("pickup_hour", "pickup_dow"), ("pickup_month",)),
    Way(("hour", "day_of_week"), ("month",)),  # SEED_NAMES: the same as the one above
)
# Each end of the trip as a zone ID or as coordinates; the pickup time one way or the other.
RULES: tuple[OneOf, ...] = (
    _end("pickup", "pu_location_id"),
    _end("dropoff", "do_location_id"),
    OneOf("pickup time", PICKUP_TIME_WAYS),
)

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
    "allOf": [rule.json_schema() for rule in RULES],
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


@functools.lru_cache(maxsize=4096)
def refusal(given: frozenset[str]) -> str | None:
    """Why a trip that gives these fields breaks a rule (the first it breaks), None if it keeps
    them all. A function of the field names only, so cached: a batch's trips mostly share one."""
    for rule in RULES:
        if rule.way(given) is None:
            if rule.what == "pickup time" and not given.isdisjoint(SEED_NAMES):
                # A more precise reason for a client that mixed the two APIs' names.
                in_order = [f for f in Trip.model_fields if f in given]
                return _seed_names_message(in_order) or rule.message(given)
            return rule.message(given)
    return None


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
        # The rules depend on which fields were given (never null: each either/or field refuses
        # null), so one cached lookup per trip of a batch.
        given = frozenset(self.model_fields_set)
        if message := refusal(given):
            raise ValueError(message)
        if not given.isdisjoint(SEED_NAMES):
            # The original API's names (rare): hold the values under this API's names, which
            # everything downstream reads.
            for seed, ours in SEED_NAMES.items():
                object.__setattr__(self, ours, getattr(self, seed))
        return self

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


_MICROS_PER_DAY = 86_400_000_000


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trips: list[Trip] = Field(min_length=1, description="Trips to predict, at most the service's max_batch")
