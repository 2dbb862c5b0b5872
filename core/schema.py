"""The canonical trip schema, and normalisation of every TLC schema era onto it.

TLC changed the Green Taxi parquet schema over the years:
  * 2020 - 2023-01: int64 ids, float64 passenger_count / RatecodeID / payment_type / trip_type,
    ``ehail_fee`` typed null;
  * 2023-02 onward: int32 ids, int64 counts, ``large_string`` flags;
  * 2025 onward: an extra ``cbd_congestion_fee`` column.
Downstream code sees exactly one schema (the modern one, plus ``cbd_congestion_fee``, null where
the month predates it), so no stage needs to know which era a month came from.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from core.months import validate_month

CANONICAL_SCHEMA = pa.schema(
    [
        ("VendorID", pa.int32()),
        ("lpep_pickup_datetime", pa.timestamp("us")),
        ("lpep_dropoff_datetime", pa.timestamp("us")),
        ("store_and_fwd_flag", pa.string()),
        ("RatecodeID", pa.int64()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()),
        ("fare_amount", pa.float64()),
        ("extra", pa.float64()),
        ("mta_tax", pa.float64()),
        ("tip_amount", pa.float64()),
        ("tolls_amount", pa.float64()),
        ("ehail_fee", pa.float64()),
        ("improvement_surcharge", pa.float64()),
        ("total_amount", pa.float64()),
        ("payment_type", pa.int64()),
        ("trip_type", pa.int64()),
        ("congestion_surcharge", pa.float64()),
        ("cbd_congestion_fee", pa.float64()),
    ]
)

# Without these a month is useless for duration prediction; any other column may be absent
# (older or newer eras) and is filled with nulls.
REQUIRED_COLUMNS = (
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
)


# How the older eras differ from the canonical (2023-02 onward) types; the synthetic source writes
# each month in its era's schema so that normalisation is exercised on every run.
_OLD_ERA_TYPES = {
    "VendorID": pa.int64(),
    "RatecodeID": pa.float64(),
    "PULocationID": pa.int64(),
    "DOLocationID": pa.int64(),
    "passenger_count": pa.float64(),
    "ehail_fee": pa.null(),
    "payment_type": pa.float64(),
    "trip_type": pa.float64(),
}
_NEW_ERA_TYPES = {"store_and_fwd_flag": pa.large_string()}
FIRST_NEW_ERA_MONTH = "2023-02"
FIRST_CBD_FEE_MONTH = "2025-01"


def tlc_raw_schema(month: str) -> pa.Schema:
    """The schema TLC publishes the Green Taxi file of ``month`` in (column order and types)."""
    month = validate_month(month)
    overrides = _OLD_ERA_TYPES if month < FIRST_NEW_ERA_MONTH else _NEW_ERA_TYPES
    return pa.schema(
        [
            pa.field(f.name, overrides.get(f.name, f.type))
            for f in CANONICAL_SCHEMA
            if f.name != "cbd_congestion_fee" or month >= FIRST_CBD_FEE_MONTH
        ]
    )


class SchemaError(ValueError):
    """A file whose columns cannot be mapped onto the canonical schema."""


def normalize(table: pa.Table, source: str) -> pa.Table:
    """Cast ``table`` (any TLC era) to :data:`CANONICAL_SCHEMA`; ``source`` names the file in errors."""
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise SchemaError(
            f"{source}: missing required column(s) {', '.join(missing)} "
            f"(has: {', '.join(table.column_names) or 'none'}); did TLC change the schema?"
        )
    if table.num_rows == 0:
        raise SchemaError(f"{source}: the month is empty (0 rows)")
    columns = []
    for field in CANONICAL_SCHEMA:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(_cast(column, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"{source}: column {field.name} has type {column.type}, "
                f"which cannot be read as {field.type}: {exc}"
            ) from exc
    return pa.Table.from_arrays(columns, schema=CANONICAL_SCHEMA)


def _cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_integer(target) and pa.types.is_floating(column.type):
        # Old-era ids/counts are floats (1.0, NaN): NaN means "unknown", not a number.
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = pc.cast(column, pa.timestamp(column.type.unit))
    return pc.cast(column, target, safe=True)
