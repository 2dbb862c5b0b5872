"""/predict_batch's columnar path: the body decoded straight into columns and checked column-wise
with NumPy, instead of one pydantic model per trip (28% of a batch's server time, issue 21).

It only ever accepts: a batch it cannot vouch for - an invalid trip, or a shape it does not take
(a pickup time with a fraction or an offset, a skipped-hour time, a key given twice, ...) - returns
None, and serve/request_body.py validates it again with pydantic, whose 422 is the answer. So every
error message is pydantic's by construction; what this module must get right is acceptance: it
never accepts what pydantic refuses, and an accepted batch's columns are the ones pydantic's trips
give (tests/test_serve_columnar.py checks both, on real trips and on generated and hostile bodies).

What it checks is derived from serve/request_models.py, not restated: the decoding types from
``Trip``'s fields (number, string, nullable or not), the bounds and enums from its JSON Schema,
the either/or rules from its ``RULES`` (``OneOf.holds``). Only the pickup time's string form is
this module's own (the common ``YYYY-MM-DDThh:mm:ss``; anything else goes to pydantic).

msgspec, not orjson: msgspec decodes into typed structs in C, refusing wrong types (a string or a
boolean for a number, a null where none is allowed) and unknown fields while it parses, so no
Python runs per field; orjson would hand back dicts that still need a type check per value.
"""

from __future__ import annotations

from datetime import date, datetime
from itertools import compress
from typing import Any

import msgspec
import numpy as np

from serve.request_models import (
    _MICROS_PER_DAY,
    _SYNTHETIC_YEAR,
    PICKUP_YEARS,
    RULES,
    SEED_NAMES,
    Trip,
    _skipped,
)
from serve.trip_columns import INPUT_FIELDS, Points, TripBatch

# The value of a number field a trip left out: JSON cannot send NaN, so a NaN is never a value
# given. The one object, so that ``tuple.count`` (identity first) counts the fields left out.
_ABSENT = float("nan")
_STRING_FIELDS = {"pickup_datetime"}
_SCHEMA = Trip.model_json_schema()


def _number_bounds(field: str) -> dict[str, Any]:
    """The field's JSON Schema without the null branch: type, bounds, enum."""
    schema = _SCHEMA["properties"][field]
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    assert len(branches) == 1 and branches[0]["type"] in ("number", "integer"), field
    return branches[0]


def _nullable(field: str) -> bool:
    return any(b.get("type") == "null" for b in _SCHEMA["properties"][field].get("anyOf", []))


def _struct_field(field: str) -> tuple[Any, ...]:
    if field in _SCHEMA.get("required", ()):
        return (field, float)
    if field in _STRING_FIELDS:
        return (field, str, None)  # a null sent is refused (no None in the type): left out is None
    return (field, float | None if _nullable(field) else float, _ABSENT)


FIELDS = tuple(Trip.model_fields)
_TripStruct = msgspec.defstruct(
    "TripColumnsRow",
    [_struct_field(f) for f in FIELDS],
    forbid_unknown_fields=True,
    kw_only=True,
)
_BOUNDS = {f: _number_bounds(f) for f in FIELDS if f not in _STRING_FIELDS}
_NULLABLE = {f for f in FIELDS if _nullable(f)}
_astuple = msgspec.structs.astuple

# The date-time forms taken here: YYYY-MM-DDThh:mm[:ss[.f to .ffffff]] (T, t or a space), no offset,
# as pandas and most clients write it; by length (16, 19, 21-26), the byte positions of the digits
# and of the separators.
_LENGTHS = (16, 19, *range(21, 27))
_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]
_SEPARATORS = {4: b"-", 7: b"-", 10: b"Tt ", 13: b":"}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Hour + weekday (+ month): Trip.pickup_local's day, for each month, as days since 1970 and weekday.
_FIRSTS = [date(_SYNTHETIC_YEAR, m, 1) for m in range(1, 13)]
_FIRST_DAY = np.array([0] + [d.toordinal() - _EPOCH_DAY for d in _FIRSTS], np.int64)
_FIRST_WEEKDAY = np.array([0] + [d.weekday() for d in _FIRSTS], np.int64)


class ColumnarDecoder:
    """Decodes ``{"trips": [...]}`` or a bare array of trips for one app's ``max_batch``."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        batch = msgspec.defstruct(
            "TripColumnsBatch", [("trips", list[_TripStruct])], forbid_unknown_fields=True
        )
        self._object = msgspec.json.Decoder(batch)
        self._bare = msgspec.json.Decoder(list[_TripStruct])

    def decode(self, body: bytes, bare: bool) -> tuple[TripBatch, int] | None:
        """The batch and how many keys its trips gave, or None: let pydantic decide."""
        try:
            rows = self._bare.decode(body) if bare else self._object.decode(body).trips
        except msgspec.MsgspecError:
            return None
        if not 1 <= len(rows) <= self.max_batch:
            return None
        return _check(dict(zip(FIELDS, zip(*map(_astuple, rows), strict=True), strict=True)), len(rows))


def _check(raw: dict[str, tuple[Any, ...]], n: int) -> tuple[TripBatch, int] | None:
    values: dict[str, np.ndarray] = {}
    given: dict[str, np.ndarray] = {}
    keys = 0
    for field, bounds in _BOUNDS.items():
        column = np.array(raw[field], dtype=np.float64)  # a null: NaN, an unknown, like absent
        known = ~np.isnan(column)
        # Most fields are absent from every trip of a batch: nothing to check there.
        if known.any():
            if not _within(column[known], bounds):
                return None
            if bounds["type"] == "integer":
                column += 0.0  # -0.0 is the integer 0, as pydantic makes it
        values[field] = column
        given[field] = known
        keys += n - raw[field].count(_ABSENT) if field in _NULLABLE else int(np.count_nonzero(known))
    datetimes = raw["pickup_datetime"]
    given["pickup_datetime"] = np.fromiter((v is not None for v in datetimes), bool, n)
    keys += int(np.count_nonzero(given["pickup_datetime"]))
    for rule in RULES:
        if not rule.holds(given).all():
            return None
    micros = np.empty(n, np.int64)
    by_datetime = given["pickup_datetime"]
    if by_datetime.any():
        parsed = _datetime_micros(list(compress(datetimes, by_datetime)))
        if parsed is None:
            return None
        micros[by_datetime] = parsed
    if not by_datetime.all():
        by_parts = ~by_datetime
        # A trip that used the original API's names gave those (the rules allow no mix).
        parts = {
            ours: np.where(given[seed], values[seed], values[ours])[by_parts]
            for seed, ours in SEED_NAMES.items()
        }
        micros[by_parts] = _parts_micros(parts["pickup_hour"], parts["pickup_dow"], parts["pickup_month"])
    matrix = np.column_stack([values[f] for f in INPUT_FIELDS.values()])
    return TripBatch(matrix, micros, _points(values, given)), keys


def _within(column: np.ndarray, bounds: dict[str, Any]) -> bool:
    ok = np.isfinite(column)
    if bounds["type"] == "integer":
        ok &= column == np.trunc(column)
    if "enum" in bounds:
        ok &= np.isin(column, bounds["enum"])
    if "minimum" in bounds:
        ok &= column >= bounds["minimum"]
    if "exclusiveMinimum" in bounds:
        ok &= column > bounds["exclusiveMinimum"]
    if "maximum" in bounds:
        ok &= column <= bounds["maximum"]
    if "exclusiveMaximum" in bounds:
        ok &= column < bounds["exclusiveMaximum"]
    return bool(ok.all())


def _datetime_micros(texts: list[str]) -> np.ndarray | None:
    """Trip.pickup_local for date-times in the forms taken here (None: another form, or one
    pydantic refuses), as microseconds since 1970."""
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    micros = np.empty(len(texts), np.int64)
    for length in np.unique(lengths):
        if length not in _LENGTHS:
            return None
        same = lengths == length
        found = _same_length_micros(texts if same.all() else list(compress(texts, same)), int(length))
        if found is None:
            return None
        micros[same] = found
    return micros


def _same_length_micros(texts: list[str], length: int) -> np.ndarray | None:
    try:
        raw = "".join(texts).encode("ascii")
    except UnicodeEncodeError:
        return None
    chars = np.frombuffer(raw, np.uint8).reshape(len(texts), length)
    separators = dict(_SEPARATORS)
    positions = list(_DIGITS)
    if length >= 19:
        separators[16] = b":"
        positions += [17, 18]
    if length >= 21:
        separators[19] = b"."
        positions += list(range(20, length))
    digits = chars[:, positions].astype(np.int64) - ord("0")
    if ((digits < 0) | (digits > 9)).any():
        return None
    for at, allowed in separators.items():
        found = chars[:, at]
        ok = found == allowed[0]
        for other in allowed[1:]:
            ok |= found == other
        if not ok.all():
            return None
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month, day, hour, minute = (digits[:, k] * 10 + digits[:, k + 1] for k in range(4, 12, 2))
    second = digits[:, 12] * 10 + digits[:, 13] if length >= 19 else np.zeros_like(year)
    fraction = np.zeros_like(year)
    for k in range(14, digits.shape[1]):  # .f to .ffffff: microseconds, padded on the right
        fraction = fraction * 10 + digits[:, k]
    if length >= 21:
        fraction *= 10 ** (26 - length)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok = (year >= PICKUP_YEARS[0]) & (year <= PICKUP_YEARS[1]) & (month >= 1) & (month <= 12)
    if not ok.all():
        return None
    ok = (day >= 1) & (day <= _DAYS_IN_MONTH[month] + (leap & (month == 2))) & (hour <= 23)
    ok &= (minute <= 59) & (second <= 59)
    if not ok.all():
        return None
    # New York wall-clock time: a time the spring-forward change skipped is pydantic's to refuse.
    for i in np.flatnonzero((hour == 2) & ((month == 3) | (month == 4))):
        when = datetime(int(year[i]), int(month[i]), int(day[i]), 2, int(minute[i]), int(second[i]))
        if _skipped(when.replace(microsecond=int(fraction[i]))):
            return None
    days = (
        ((year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (month - 1)).astype("datetime64[D]")
        + (day - 1)
    ).astype(np.int64)
    return (days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000 + fraction


def _parts_micros(hour: np.ndarray, weekday: np.ndarray, month: np.ndarray) -> np.ndarray:
    """Trip.pickup_local for hour + weekday (+ month), as microseconds since 1970."""
    month = np.where(np.isnan(month), 1, month).astype(np.int64)
    weekday = weekday.astype(np.int64)
    days = _FIRST_DAY[month] + (weekday - _FIRST_WEEKDAY[month]) % 7
    # Truncated, as pydantic's path does: 23.999999999999996 h stays on its day.
    micros = np.minimum((hour * 3_600_000_000).astype(np.int64), _MICROS_PER_DAY - 1)
    return days * _MICROS_PER_DAY + micros


def _points(values: dict[str, np.ndarray], given: dict[str, np.ndarray]) -> Points | None:
    if not (given["pickup_longitude"].any() or given["dropoff_longitude"].any()):
        return None
    return {end: (values[f"{end}_longitude"], values[f"{end}_latitude"]) for end in ("pickup", "dropoff")}
