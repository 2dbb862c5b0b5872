"""/predict's decoder for the common trip: the body straight to the model's feature row, checked by
msgspec in C, without a pydantic model (issue 21: pydantic, its duplicate-key check and the
Trip -> row steps were most of a single trip's own handling).

Like the batch's columnar path (serve/batch_columns.py) it only ever accepts: a body it cannot
vouch for returns None and serve/request_body.py validates it with pydantic, whose answer (the
trip, or its 422) is the one given. So every error message is pydantic's by construction; what this
module must get right is acceptance - never a body pydantic refuses - and the row, which must equal
the one the general path computes (tests/test_serve_one_trip.py checks both, on real trips and on
generated and hostile bodies).

What it checks is derived from serve/request_models.py, not restated: each field's msgspec type
(bounds and enums as msgspec ``Meta`` and ``Literal``, checked while parsing) from ``Trip``'s JSON
Schema, and the either/or rules from its cached ``refusal``. What it takes is the common form:
zone IDs (coordinates need the zone lookup: pydantic's path), a plain integer for an integer
field (170.0 goes to pydantic), and a pickup time as ``YYYY-MM-DDThh:mm[:ss]`` or hour + weekday.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from itertools import repeat
from operator import is_not
from typing import Annotated, Any, Literal

import msgspec

from core.features import feature_row
from serve.batch_columns import _NULLABLE, FIELDS, _number_bounds
from serve.request_models import (
    _MICROS_PER_DAY,
    _SYNTHETIC_YEAR,
    PICKUP_YEARS,
    SEED_NAMES,
    _skipped,
    refusal,
)

_UNSET: Any = msgspec.UNSET
_POINT_FIELDS = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")


# msgspec.Meta's bounds <- JSON Schema's.
_LIMITS = (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum"))


def _value_type(field: str) -> Any:
    """The field's msgspec type from its JSON Schema: bounds and enums checked while decoding."""
    bounds = _number_bounds(field)
    if "enum" in bounds:
        return Literal[tuple(bounds["enum"])]
    limits = {key: bounds[name] for key, name in _LIMITS if name in bounds}
    number = int if bounds["type"] == "integer" else float
    return Annotated[number, msgspec.Meta(**limits)]


def _struct_field(field: str) -> tuple[Any, ...]:
    if field == "pickup_datetime":
        return (field, str | msgspec.UnsetType, _UNSET)  # a null sent is pydantic's to refuse
    value = _value_type(field)
    if field == "trip_distance":
        return (field, value)
    if field in _NULLABLE:
        return (field, value | None | msgspec.UnsetType, _UNSET)
    return (field, value | msgspec.UnsetType, _UNSET)


_OneTrip = msgspec.defstruct(
    "OneTrip", [_struct_field(f) for f in FIELDS], forbid_unknown_fields=True, kw_only=True
)
_astuple = msgspec.structs.astuple
_AT = {field: i for i, field in enumerate(FIELDS)}
_OPTIONAL = tuple(_AT[f] for f in ("vendor_id", "ratecode_id", "trip_type", "passenger_count"))
# Hour + weekday (+ month): Trip.pickup_local's day for each month, as days since 1970 and weekday.
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_FIRSTS = [date(_SYNTHETIC_YEAR, m, 1) for m in range(1, 13)]
_FIRST_DAY = [0] + [d.toordinal() - _EPOCH_DAY for d in _FIRSTS]
_FIRST_WEEKDAY = [0] + [d.weekday() for d in _FIRSTS]
_EPOCH = datetime(1970, 1, 1)
# The date-time forms taken here; the date's and time's ranges are datetime.fromisoformat's to check.
_DATETIME_FORM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?")


class OneTripDecoder:
    """Decodes one trip's body into its feature row (:data:`core.features.FEATURES` order)."""

    def __init__(self) -> None:
        self._decode = msgspec.json.Decoder(_OneTrip).decode

    def row(self, body: bytes) -> tuple[list[float], int] | None:
        """The trip's feature row and how many keys it gave, or None: let pydantic decide."""
        try:
            values = _astuple(self._decode(body))
        except msgspec.MsgspecError:
            return None
        form = _forms.get(which := tuple(map(is_not, values, _ALL_UNSET)))
        if form is None:
            form = _forms[which] = _form(which)
        if not form:
            return None
        micros = _pickup_micros(values)
        if micros is None:
            return None
        optional = tuple(None if (v := values[i]) is _UNSET else v for i in _OPTIONAL)
        pu, do, distance = (values[_AT[f]] for f in ("pu_location_id", "do_location_id", "trip_distance"))
        return feature_row(pu, do, micros, distance, optional), form  # type: ignore[arg-type]


# Per set of fields given (a tuple of flags in FIELDS' order): how many, or 0 if a body that gives
# them is left to pydantic (it breaks a rule, or gives coordinates). Few sets occur: cached.
_forms: dict[tuple[bool, ...], int] = {}
_ALL_UNSET = tuple(repeat(_UNSET, len(FIELDS)))


def _form(which: tuple[bool, ...]) -> int:
    given = frozenset(f for f, flag in zip(FIELDS, which, strict=True) if flag)
    if refusal(given) is not None or not given.isdisjoint(_POINT_FIELDS):
        return 0  # coordinates: their zones are looked up on pydantic's path
    return len(given)


def _pickup_micros(values: tuple[Any, ...]) -> int | None:
    """Trip.pickup_local as microseconds since 1970 (None: a form this module leaves to pydantic)."""
    text = values[_AT["pickup_datetime"]]
    if text is not _UNSET:
        return _datetime_micros(text)
    # The rules allow one set of names: this API's, or the original API's (SEED_NAMES).
    hour, weekday, month = (
        values[_AT[ours]] if values[_AT[ours]] is not _UNSET else values[_AT[seed]]
        for seed, ours in SEED_NAMES.items()
    )
    month = 1 if month is _UNSET else month
    day = _FIRST_DAY[month] + (weekday - _FIRST_WEEKDAY[month]) % 7
    # Truncated, as Trip.pickup_local does: 23.999999999999996 h stays on its day.
    return day * _MICROS_PER_DAY + min(int(hour * 3_600_000_000), _MICROS_PER_DAY - 1)


def _datetime_micros(text: str) -> int | None:
    """``YYYY-MM-DDThh:mm[:ss[.f to .ffffff]]`` (T, t or a space), no offset, years 2000-2099, a
    time that existed in New York; anything else None."""
    if _DATETIME_FORM.fullmatch(text) is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # a day the month does not have, hour 24, ...
        return None
    if not PICKUP_YEARS[0] <= when.year <= PICKUP_YEARS[1]:
        return None
    if when.hour == 2 and when.month in (3, 4) and _skipped(when):
        return None
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
