"""The prediction endpoints' JSON bodies, read with bounded work whatever a client sends.

A batch is first offered to the columnar path (serve/batch_columns.py: decoded into columns and
checked with NumPy; its cost against pydantic's: bench/results/serve_request_cost.json). It
accepts or declines, never refuses, so everything below still decides every refusal.

pydantic parses and validates the bytes in one pass (``model_validate_json``: half the cost of
FastAPI's json.loads + validation for a batch), with four guards around it, each cheap on the
common path:

- **the batch size before any trip is validated**: the trips' list has pydantic's own
  ``max_length`` (max_batch), which it checks on the JSON array's length before validating items,
  so ``{"trips": [0, 0, ...]}`` is a 413 naming the count, not half a million 422 errors;
- **a bound on fields**: a body with more ``:`` than the trips it may hold can have fields (a
  trip has at most ``len(Trip.model_fields)``, and a pickup time 3 colons) is refused before
  validation - one trip with 80,000 unknown keys costs 0.3 s to report key by key;
- **the errors returned capped** at ``max_errors`` (the 422 says how many more there were);
- **duplicate keys refused** (JSON parsers disagree on which value wins; pydantic keeps the last,
  silently dropping an invalid earlier one). A valid body's key count (its trips' fields) is
  compared with its ``"…":`` count, one vectorised pass over the bytes; only when they differ (keys
  written ``"k" :``, or a string holding ``":``) is the body parsed again, exactly, to find out.
"""

from __future__ import annotations

import json
from operator import attrgetter
from typing import Annotated, Any, NoReturn

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from serve.batch_columns import ColumnarDecoder
from serve.request_models import Trip
from serve.trip_columns import TripBatch

_fields_set = attrgetter("__pydantic_fields_set__")
# Colons a valid trip can hold besides its keys' own: hh:mm:ss and an offset's hh:mm.
_COLONS_PER_TIME = 3
_WHITESPACE = (32, 9, 10, 13)
# Below this size plain bytes methods beat numpy's set-up.
_SMALL_BODY = 4096


class TooManyTrips(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(f"{count} trips")
        self.count = count


class CappedValidationError(RequestValidationError):
    """A 422 whose error list was cut to ``max_errors``; ``omitted`` more were found."""

    def __init__(self, errors: list[dict[str, Any]], omitted: int) -> None:
        super().__init__(errors)
        self.omitted = omitted


class BodyReader:
    """Reads /predict and /predict_batch bodies for an app's ``max_batch`` and ``max_errors``."""

    def __init__(self, max_batch: int, max_errors: int) -> None:
        self.max_batch = max_batch
        self.max_errors = max_errors
        trips = Annotated[list[Trip], Field(min_length=1, max_length=max_batch)]

        class Batch(BaseModel):
            model_config = ConfigDict(extra="forbid")
            trips: trips  # type: ignore[valid-type]

        self._batch = Batch.model_validate_json
        self._bare = TypeAdapter(trips).validate_json
        self._columnar = ColumnarDecoder(max_batch)
        fields_per_trip = len(Trip.model_fields) + _COLONS_PER_TIME
        self._most_colons_one = fields_per_trip
        self._most_colons_batch = 1 + max_batch * fields_per_trip

    def trip(self, body: bytes) -> Trip:
        self._bound_fields(body, self._most_colons_one)
        trip: Trip = self._validate(Trip.model_validate_json, body, ())
        _refuse_duplicates(body, len(trip.model_fields_set), None)
        return trip

    def trips(self, body: bytes) -> tuple[TripBatch, tuple[str, ...]]:
        """A batch: ``{"trips": [...]}``, or the original API's bare array ``[...]``; also returns
        where the trips are in the body (for error locations). Raises TooManyTrips past max_batch.

        The columnar path first (serve/batch_columns.py); whatever it does not accept - an invalid
        trip, a shape it does not take, a key it cannot rule out as given twice - pydantic decides,
        so every refusal is pydantic's."""
        self._bound_fields(body, self._most_colons_batch)
        bare = body.lstrip()[:1] == b"["
        where: tuple[str, ...] = () if bare else ("trips",)
        decoded = self._columnar.decode(body, bare)
        if decoded is not None and quoted_colons(body) == len(where) + decoded[1]:
            return decoded[0], where
        if bare:
            trips: list[Trip] = self._validate(self._bare, body, ())
        else:
            trips = self._validate(self._batch, body, ("trips",)).trips
        keys = len(where) + sum(map(len, map(_fields_set, trips)))
        _refuse_duplicates(body, keys, (where, len(trips)))
        return TripBatch.from_trips(trips), where

    def _bound_fields(self, body: bytes, most: int) -> None:
        colons = body.count(b":") if len(body) < _SMALL_BODY else int(np.count_nonzero(_bytes(body) == 58))
        if colons > most:
            _refuse(
                "too_many_fields",
                (),
                f"the body holds more fields than the trips it may carry can have ({colons} ':' "
                f"for at most {most}): send only the fields in /docs",
            )

    def _validate(self, validate: Any, body: bytes, where: tuple[str, ...]) -> Any:
        try:
            return validate(body)
        except ValidationError as exc:
            # Checked by pydantic on the array's length before any trip is validated.
            for err in exc.errors(include_url=False, include_input=False):
                if err["type"] == "too_long" and err["loc"] == where:
                    raise TooManyTrips(err["ctx"]["actual_length"]) from None
                break
            count = exc.error_count()
            errors = [
                {"type": err["type"], "loc": ("body", *err["loc"]), "msg": err["msg"]}
                for err in exc.errors(include_url=False, include_input=False, include_context=False)[
                    : self.max_errors
                ]
            ]
            raise CappedValidationError(errors, count - len(errors)) from None


def _refuse(kind: str, loc: tuple[Any, ...], msg: str) -> NoReturn:
    raise CappedValidationError([{"type": kind, "loc": ("body", *loc), "msg": msg}], 0)


def _refuse_duplicates(body: bytes, keys: int, batch: tuple[tuple[str, ...], int] | None) -> None:
    """422 if a JSON object of this valid body gives a key twice.

    ``keys`` is the number of distinct keys the body holds (its trips' fields; they are scalars,
    so there are no others); ``batch`` says where the trips are and how many (None: one trip).
    Every key is a string followed by ``:``, so the count of ``"`` directly before a ``:`` is at
    least the number of keys written, which is at least ``keys``: equal, no key was written twice.
    Unequal (or a ``:`` after whitespace), the exact parse decides."""
    if quoted_colons(body) == keys:
        return
    closed = 0

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal closed
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise _Duplicate(next(k for i, k in enumerate(keys) if k in keys[:i]), closed)
        closed += 1
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=check)
    except _Duplicate as dup:
        # Trips hold no objects: the n-th object to close is trip n, an enclosing one closes last.
        loc: tuple[Any, ...] = (dup.key,)
        if batch is not None and dup.index < batch[1]:
            loc = (*batch[0], dup.index, dup.key)
        _refuse(
            "duplicate_key",
            loc,
            f"{dup.key} is given twice: give each field once (JSON parsers disagree on which value wins)",
        )


class _Duplicate(Exception):
    def __init__(self, key: str, index: int) -> None:
        self.key = key
        self.index = index


def quoted_colons(body: bytes) -> int | None:
    """How many ``:`` follow a ``"`` directly; None if one follows whitespace (keys written
    ``"k" :``, which the count would miss)."""
    if len(body) < _SMALL_BODY:
        if b" :" in body or b"\t:" in body or b"\n:" in body or b"\r:" in body:
            return None
        return body.count(b'":')
    data = _bytes(body)
    before = data[:-1][data[1:] == 58]  # the byte before each ':'
    if np.isin(before, _WHITESPACE).any():
        return None
    return int(np.count_nonzero(before == 34))


def _bytes(body: bytes) -> np.ndarray:
    return np.frombuffer(body, np.uint8)
