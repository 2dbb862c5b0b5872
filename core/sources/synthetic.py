"""The ``synthetic`` source: deterministic NYC Green Taxi months, the pipeline's embedded, offline data.

Every month is sampled from aggregate statistics of real TLC months
(``core/resources/synthetic_calibration.json``, written by ``scripts/calibrate_synthetic.py``), so a
model trained on a synthetic month learns the same structure, and makes errors of the same size,
as one trained on real data, while a fresh clone works without any download.

Properties the pipeline relies on:
  * **Reproducible**: the random stream is seeded from ``(seed, year, month)``, so a month's
    table (and the parquet bytes :func:`core.io.write_parquet` makes of it) never changes,
    which keeps DVC's hashes stable; different months differ.
  * **Raw, era-exact schema**: the table has the exact column order and types TLC published for
    that month (old float-coded era up to 2023-01, int32/int64 era from 2023-02,
    ``cbd_congestion_fee`` from 2025-01), so ingest's normalisation is exercised as on real files.
  * **Realistically dirty**: zero distances, sub-minute and day-long meters, GPS distance glitches
    and a few negative durations, at the real shares, so the pipeline's filters have work to do.
  * **Slow drift, like real months**: speed by weekday/weekend hour, trip length, pickup hours
    and volume follow the month of the year and a slow secular trend fitted on the real months
    (``time`` in the calibration), so a model trained on one month gets a few percent worse over
    the following ones, as on real data, while no column drifts enough for Evidently to alarm.
  * **A regime shift** from ``shift_month`` on: traffic slows by ``shift_speed_factor`` and a
    ``shift_long_trip_share`` of trips comes from a long-trip mix (airports and outer boroughs,
    an earlier day, more dispatched and shared rides). Drift detection and retraining then have
    a real change to find, and the months before it are a stable regime that must not alarm.
"""

from __future__ import annotations

import calendar
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.months import FIRST_TLC_MONTH, add_months, month_index, parse_month
from core.params import SyntheticParams
from core.schema import tlc_raw_schema
from core.sources.base import DataSource

CALIBRATION_FILE = "synthetic_calibration.json"

_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_HOUR = 3600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR

# The long-trip mix is a designed regime, not an observed one: real long trips are only a little
# more often dispatched, so these shares exaggerate them enough for the change to be
# unmistakable in the vendor, trip-type, rate-code and passenger columns too.
LONG_VENDOR1_SHARE = 0.65
LONG_DISPATCH_SHARE = 0.45  # trip_type 2, i.e. booked through a base; nearly all are RatecodeID 5
LONG_PASSENGERS = {1: 0.45, 2: 0.28, 3: 0.1, 4: 0.06, 5: 0.06, 6: 0.05}
# Airport runs start early and lean to the weekend; the evening commute matters less.
LONG_HOUR_TILT = np.array(
    [
        *[1.2, 1.2, 1.2, 1.5, 2.5, 2.5, 2.5, 2.5, 2.0, 1.3, 1.3, 1.3],  # midnight to 11 a.m.
        *[1.0, 1.0, 1.0, 1.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.9, 0.9, 0.9],  # noon to 11 p.m.
    ]
)
LONG_WEEKDAY_TILT = np.array([1.0, 1.0, 1.0, 1.0, 1.1, 1.5, 1.6])  # Monday first
AIRPORT_ZONES = (1, 132, 138)  # Newark, JFK, LaGuardia
LONG_AIRPORT_BOOST = 3.0
# Negative durations do not occur in the 2021-2025 Green files but do in other TLC feeds (clock
# resets); a handful keeps the duration filter honest about them.
NEGATIVE_DURATION_SHARE = 0.0002

_SEGMENTS = ("S", "M", "L")  # street hail, "missing block" (app/flex rows), long-trip mix


# ---------------------------------------------------------------------------------------------
# Calibration tables, turned once into arrays that vectorised sampling can index.


def _cdf(weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cum / cum[-1]


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _quantile_draw(quantiles: Any, levels: np.ndarray, u: np.ndarray) -> np.ndarray:
    # Inverse-CDF sampling from stored quantiles, linear in between: the empirical shape, tails included.
    return np.interp(u, levels, np.asarray(quantiles, dtype=np.float64))


@dataclass(frozen=True)
class _Segment:
    hour_dow: np.ndarray  # (7, 24) pickups per calendar day-of-week and hour
    pu_zone: np.ndarray
    pu_cdf: np.ndarray
    pair_key: np.ndarray  # pickup zone + cumulative share within it: one sorted array for all zones
    pair_do: np.ndarray
    pair_mu: np.ndarray  # NaN where the pair is too rare for its own distance
    pair_sigma: np.ndarray
    covered: np.ndarray  # per pickup zone, the share of its trips covered by the explicit pairs
    fb_borough_cdf: np.ndarray  # (boroughs, boroughs)
    fb_zone_key: np.ndarray  # borough code + cumulative share of dropoff zones within it
    fb_zone: np.ndarray
    borough_mu: np.ndarray  # (boroughs * boroughs,)
    borough_sigma: np.ndarray
    same_mu: np.ndarray  # (boroughs,)
    same_sigma: np.ndarray
    z_quantiles: np.ndarray


@dataclass(frozen=True)
class _Calibration:
    raw: dict[str, Any]
    zone_borough: np.ndarray  # indexed by zone id (0 and 266 are "Unknown")
    n_boroughs: int
    segments: dict[str, _Segment]
    anchor_months: list[str]
    anchor_index: np.ndarray
    dist_centres: np.ndarray
    dist_effect: np.ndarray
    hour_dow_effect: np.ndarray
    pu_effect: np.ndarray
    do_effect: np.ndarray
    pu_slope: np.ndarray
    do_slope: np.ndarray
    hour_slope: np.ndarray  # (7, 24)
    pair_effect: np.ndarray  # indexed by pu * 267 + do
    hour_borough_effect: np.ndarray  # (boroughs, weekend, 24)
    resid_edges: np.ndarray
    resid_q: dict[str, np.ndarray]  # segment -> (groups, quantiles)
    noise_scale: np.ndarray  # (boroughs, 24): pickup borough and hour
    speed: np.ndarray  # (weekend, 24, terms): log-duration calendar, see _calendar_terms
    speed_slope: np.ndarray  # (weekend, 24, terms): ... of its slope in centred log distance
    log_distance: np.ndarray  # (terms,)
    hour_tilt: np.ndarray  # (24, terms): log pickup-hour weights
    volume: np.ndarray  # (terms,): log trips per day
    fine: np.ndarray  # quantile levels of the noise tables
    coarse: np.ndarray  # ... of the fare and tip tables
    junk: np.ndarray  # ... of the junk-row tables


def _build_segment(raw: dict[str, Any], zone_borough: np.ndarray, n_boroughs: int) -> _Segment:
    pu = np.array(raw["pu"], dtype=np.float64)
    pairs = raw["pairs"]  # sorted by (pickup, dropoff)
    pair_pu = np.array([p[0] for p in pairs], dtype=np.int64)
    pair_p = np.array([p[2] for p in pairs], dtype=np.float64)
    covered = np.zeros(zone_borough.shape[0])
    np.add.at(covered, pair_pu, pair_p)
    # Cumulative share within each pickup zone, offset by the zone id, makes one monotone key
    # array: searchsorted(pu + u) then lands inside that zone's own pairs.
    within = np.zeros_like(pair_p)
    running: dict[int, float] = {}
    for i, (zone, share) in enumerate(zip(pair_pu.tolist(), pair_p.tolist(), strict=True)):
        running[zone] = running.get(zone, 0.0) + share
        within[i] = running[zone]
    pair_key = pair_pu + np.minimum(within, 1.0)
    covered = np.minimum(covered, 1.0)

    fb = np.array(raw["fallback_borough"], dtype=np.float64)
    empty = fb.sum(axis=1) <= 0
    fb[empty] = fb.sum(axis=0)  # a pickup borough without fallback trips borrows the overall mix
    fb_cdf = np.cumsum(fb, axis=1) / fb.sum(axis=1, keepdims=True)

    fz = np.array(raw["fallback_zone"], dtype=np.float64)
    fz_zone = fz[:, 0].astype(np.int64)
    fz_borough = zone_borough[fz_zone]
    order = np.lexsort((fz_zone, fz_borough))
    fz_zone, fz_borough, fz_w = fz_zone[order], fz_borough[order], fz[order, 1]
    fz_key = np.zeros_like(fz_w)
    for b in np.unique(fz_borough):
        sel = fz_borough == b
        fz_key[sel] = b + _cdf(fz_w[sel])

    all_mu = [v[0] for v in raw["borough_distance"].values()]
    default_mu, default_sigma = float(np.median(all_mu)), 0.6
    borough_mu = np.full(n_boroughs * n_boroughs, default_mu)
    borough_sigma = np.full(n_boroughs * n_boroughs, default_sigma)
    for key, (mu, sigma) in raw["borough_distance"].items():
        borough_mu[int(key)], borough_sigma[int(key)] = mu, sigma
    same_values = list(raw["same_zone_distance"].values()) or [[np.log(0.8), 0.6]]
    same_mu = np.full(n_boroughs, float(np.median([v[0] for v in same_values])))
    same_sigma = np.full(n_boroughs, float(np.median([v[1] for v in same_values])))
    for key, (mu, sigma) in raw["same_zone_distance"].items():
        same_mu[int(key)], same_sigma[int(key)] = mu, sigma

    return _Segment(
        hour_dow=np.array(raw["hour_dow"], dtype=np.float64),
        pu_zone=pu[:, 0].astype(np.int64),
        pu_cdf=_cdf(pu[:, 1]),
        pair_key=pair_key,
        pair_do=np.array([p[1] for p in pairs], dtype=np.int64),
        pair_mu=np.array([p[3] if len(p) > 3 else np.nan for p in pairs], dtype=np.float64),
        pair_sigma=np.array([p[4] if len(p) > 3 else np.nan for p in pairs], dtype=np.float64),
        covered=covered,
        fb_borough_cdf=fb_cdf,
        fb_zone_key=fz_key,
        fb_zone=fz_zone,
        borough_mu=borough_mu,
        borough_sigma=borough_sigma,
        same_mu=same_mu,
        same_sigma=same_sigma,
        z_quantiles=np.array(raw["distance_z_quantiles"], dtype=np.float64),
    )


def _long_mix(observed: dict[str, Any]) -> dict[str, Any]:
    """The post-shift long-trip mix: real long trips, tilted towards airports and early hours."""
    tilted = dict(observed)
    tilted["hour_dow"] = (
        np.array(observed["hour_dow"]) * LONG_WEEKDAY_TILT[:, None] * LONG_HOUR_TILT[None, :]
    ).tolist()
    tilted["pu"] = [[z, p * (LONG_AIRPORT_BOOST if z in AIRPORT_ZONES else 1.0)] for z, p in observed["pu"]]
    tilted["fallback_zone"] = [
        [z, p * (LONG_AIRPORT_BOOST if z in AIRPORT_ZONES else 1.0)] for z, p in observed["fallback_zone"]
    ]
    # Boost airport dropoffs within each pickup zone's explicit pairs, keeping the zone's total
    # (so the share left to the borough fallback is unchanged).
    pairs = [list(p) for p in observed["pairs"]]
    totals: dict[int, list[float]] = {}
    for p in pairs:
        boosted = p[2] * (LONG_AIRPORT_BOOST if p[1] in AIRPORT_ZONES else 1.0)
        before, after = totals.get(p[0], [0.0, 0.0])
        totals[p[0]] = [before + p[2], after + boosted]
        p[2] = boosted
    for p in pairs:
        before, after = totals[p[0]]
        p[2] *= before / after
    tilted["pairs"] = pairs
    return tilted


def _pair_effects(pairs: list[list[float]], n_zones: int) -> np.ndarray:
    effect = np.zeros(n_zones * n_zones)
    for pu, do, value in pairs:
        effect[int(pu) * n_zones + int(do)] = value
    return effect


@lru_cache(maxsize=1)
def _calibration() -> _Calibration:
    raw = json.loads(resources.files("core.resources").joinpath(CALIBRATION_FILE).read_text())
    boroughs: list[str] = raw["boroughs"]
    unknown = boroughs.index("Unknown")
    zone_borough = np.array([unknown, *raw["zone_borough"], unknown], dtype=np.int64)
    duration = raw["duration"]
    anchors = sorted(raw["anchors"])
    return _Calibration(
        raw=raw,
        zone_borough=zone_borough,
        n_boroughs=len(boroughs),
        segments={
            s: _build_segment(
                _long_mix(raw["segments"][s]) if s == "L" else raw["segments"][s], zone_borough, len(boroughs)
            )
            for s in _SEGMENTS
        },
        anchor_months=anchors,
        anchor_index=np.array([month_index(m) for m in anchors], dtype=np.float64),
        dist_centres=np.array(duration["dist_log_centres"]),
        dist_effect=np.array(duration["dist_effect"]),
        hour_dow_effect=np.array(duration["hour_dow"]),
        pu_effect=np.append(np.array(duration["pu_zone"]), 0.0),
        do_effect=np.append(np.array(duration["do_zone"]), 0.0),
        pu_slope=np.append(np.array(duration["pu_slope"]), 0.0),
        do_slope=np.append(np.array(duration["do_slope"]), 0.0),
        hour_slope=np.array(duration["hour_slope"]),
        pair_effect=_pair_effects(duration["pair"], zone_borough.shape[0]),
        hour_borough_effect=np.array(duration["hour_borough"]),
        resid_edges=np.array(duration["resid_group_edges"]),
        resid_q={s: np.array(q) for s, q in duration["resid_quantiles"].items()},
        noise_scale=np.array(duration["noise_scale"]),
        speed=np.array(raw["time"]["speed"]),
        speed_slope=np.array(raw["time"]["speed_slope"]),
        log_distance=np.array(raw["time"]["log_distance"]),
        hour_tilt=np.array(raw["time"]["hour_tilt"]),
        volume=np.array(raw["time"]["volume"]),
        fine=np.array(raw["quantile_levels"]["fine"]),
        coarse=np.array(raw["quantile_levels"]["coarse"]),
        junk=np.array(raw["quantile_levels"]["junk"]),
    )


class _Anchors:
    """Month-dependent statistics: shares interpolated between real months, tariffs stepped."""

    def __init__(self, cal: _Calibration, month: str) -> None:
        index = float(month_index(month))
        months, xs = cal.anchor_months, cal.anchor_index
        if index <= xs[0]:
            self._mix = [(months[0], 1.0)]
        elif index >= xs[-1]:
            self._mix = [(months[-1], 1.0)]
        else:
            hi = int(np.searchsorted(xs, index, side="right"))
            w = (index - xs[hi - 1]) / (xs[hi] - xs[hi - 1])
            self._mix = [(months[hi - 1], 1.0 - w), (months[hi], w)]
        # Fares change by decree on a date, not gradually: use the latest real month's tariff.
        tariff = months[max(int(np.searchsorted(xs, index, side="right")) - 1, 0)]
        self.fares: dict[str, Any] = cal.raw["anchors"][tariff]["fares"]
        self._raw = cal.raw["anchors"]

    def value(self, *path: str) -> float:
        total = 0.0
        for month, w in self._mix:
            node: Any = self._raw[month]
            for key in path:
                node = node[key]
            total += w * float(node)
        return total

    def shares(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for month, w in self._mix:
            for key, p in self._raw[month][name].items():
                out[key] = out.get(key, 0.0) + w * p
        return out


_SEASON_TERMS = 3  # the calendar's columns before the harmonics: intercept, trend, lockdown era


def _calendar_terms(cal: _Calibration, month: str) -> np.ndarray:
    """The calendar design row of ``month``, as scripts/calibrate_synthetic.py's ``time_design``."""
    time = cal.raw["time"]
    index = float(month_index(month))
    # The trend is known only between the real months it was fitted on: beyond them it stays
    # flat rather than extrapolating traffic for years.
    clipped = min(max(index, float(month_index(time["first"]))), float(month_index(time["last"])))
    terms = [1.0, (clipped - time["centre"]) / 12.0, float(index <= month_index(time["pandemic_end"]))]
    month_of_year = parse_month(month)[1] - 1
    for k in range(1, int(time["harmonics"]) + 1):
        angle = 2 * np.pi * k * month_of_year / 12.0
        terms += [np.cos(angle), np.sin(angle)]
    return np.array(terms)


@dataclass(frozen=True)
class _Season:
    """What the calendar makes of one month."""

    speed: np.ndarray  # (weekend, 24, 2) log-duration offset at 2 miles, and its distance slope
    distance_factor: float
    hour_weight: np.ndarray  # (24,) multiplies the segments' pickup-hour pattern
    volume_factor: float  # seasonal only: rows_per_month stays the yearly mean


def _season(cal: _Calibration, month: str) -> _Season:
    terms = _calendar_terms(cal, month)
    return _Season(
        speed=np.stack([cal.speed @ terms, cal.speed_slope @ terms], axis=-1),
        distance_factor=float(np.exp(cal.log_distance @ terms)),
        hour_weight=np.exp(cal.hour_tilt @ terms),
        volume_factor=float(np.exp(cal.volume[_SEASON_TERMS:] @ terms[_SEASON_TERMS:])),
    )


_ZONE_DRIFT_STREAM = 0x5A0E  # keeps the zones' random walk apart from any month's stream


@lru_cache(maxsize=64)
def _zone_drift(seed: int, month: str) -> np.ndarray:
    """Per zone (pickup, dropoff) a slowly wandering log-duration offset: places change speed.

    A stationary AR(1) with the spread and persistence measured on real months; one random
    stream per seed, walked from the first TLC month, so a month's value never depends on which
    other months were generated.
    """
    drift = _calibration().raw["duration"]["zone_drift"]
    rho, sigma = float(drift["rho"]), float(drift["sigma"]) / np.sqrt(2.0)
    steps = month_index(month) - month_index(FIRST_TLC_MONTH)
    shocks = np.random.default_rng([seed, _ZONE_DRIFT_STREAM]).standard_normal((max(steps, 0) + 1, 2, 267))
    state = shocks[0] * sigma
    innovation = sigma * np.sqrt(1.0 - rho * rho)
    for shock in shocks[1:]:
        state = rho * state + innovation * shock
    return state


def _categorical(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    keys = sorted(shares, key=float)
    values = np.array([float(k) for k in keys])
    return values[_pick(_cdf([shares[k] for k in keys]), rng.random(n))]


# ---------------------------------------------------------------------------------------------
# Sampling.


def _row_count(
    rng: np.random.Generator, params: SyntheticParams, season: _Season, year: int, month: int
) -> int:
    days = calendar.monthrange(year, month)[1]
    # Longer months have more trips, damped so the data size stays near the nominal one; the
    # real season (busy spring and autumn, quiet summer and winter) and a little noise make each
    # month's count its own.
    factor = (days / 30.44) ** 0.5 * season.volume_factor * (1.0 + rng.uniform(-0.015, 0.015))
    return max(round(params.rows_per_month * factor), 1)


def _pickups(
    rng: np.random.Generator, seg: _Segment, hour_weight: np.ndarray, n: int, first: date, days: int
) -> np.ndarray:
    """Pickup times (epoch microseconds): day and hour from the segment's weekly pattern."""
    first_day = (first - date(1970, 1, 1)).days
    dows = (first_day + np.arange(days) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    cell_cdf = _cdf((seg.hour_dow[dows] * hour_weight).reshape(-1))
    cell = _pick(cell_cdf, rng.random(n))
    seconds = rng.integers(0, 3600, n)
    return (first_day + cell // 24) * _US_PER_DAY + (cell % 24) * _US_PER_HOUR + seconds * _US_PER_SECOND


def _zones_and_distance(
    rng: np.random.Generator, cal: _Calibration, seg: _Segment, n: int, distance_factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pu = seg.pu_zone[_pick(seg.pu_cdf, rng.random(n))]
    u = rng.random(n)
    in_pair = u < seg.covered[pu]
    pair = np.minimum(np.searchsorted(seg.pair_key, pu + u, side="right"), len(seg.pair_key) - 1)
    do = np.where(in_pair, seg.pair_do[pair], 0)

    # Rarer pairs: dropoff borough given the pickup borough, then a zone of that borough.
    pu_b = cal.zone_borough[pu]
    fb = ~in_pair
    u_b = rng.random(n)
    do_b = (u_b[:, None] > seg.fb_borough_cdf[pu_b]).sum(axis=1)
    do_b = np.minimum(do_b, cal.n_boroughs - 1)
    u_z = rng.random(n)
    idx = np.minimum(np.searchsorted(seg.fb_zone_key, do_b + u_z, side="right"), len(seg.fb_zone) - 1)
    do = np.where(fb, seg.fb_zone[idx], do)

    do_b = cal.zone_borough[do]
    same = pu == do
    mu = np.where(same, seg.same_mu[pu_b], seg.borough_mu[pu_b * cal.n_boroughs + do_b])
    sigma = np.where(same, seg.same_sigma[pu_b], seg.borough_sigma[pu_b * cal.n_boroughs + do_b])
    known = in_pair & ~np.isnan(seg.pair_mu[pair])
    mu = np.where(known, seg.pair_mu[pair], mu)
    sigma = np.where(known, seg.pair_sigma[pair], sigma)
    z = _quantile_draw(seg.z_quantiles, cal.fine, rng.random(n))
    distance = np.maximum(np.round(np.exp(mu + sigma * z) * distance_factor, 2), 0.01)
    return pu, do, distance


def _durations(
    rng: np.random.Generator,
    cal: _Calibration,
    noise_segment: str,
    level: float,
    speed: np.ndarray,
    zones: np.ndarray,
    pu: np.ndarray,
    do: np.ndarray,
    distance: np.ndarray,
    pickup_us: np.ndarray,
) -> np.ndarray:
    """Trip minutes: the fitted log-duration model plus real (empirical) residual noise."""
    days = pickup_us // _US_PER_DAY
    hour = (pickup_us % _US_PER_DAY) // _US_PER_HOUR
    dow = (days + 3) % 7
    log_d = np.log(distance)
    x = log_d - cal.raw["duration"]["log_dist_centre"]
    season = speed[(dow >= 5).astype(np.int64), hour]
    log_minutes = (
        cal.raw["duration"]["intercept"]
        + np.interp(log_d, cal.dist_centres, cal.dist_effect)
        + (cal.pu_slope[pu] + cal.do_slope[do] + cal.hour_slope[dow, hour] + season[:, 1]) * x
        + cal.hour_dow_effect[dow, hour]
        + cal.pu_effect[pu]
        + cal.do_effect[do]
        + cal.pair_effect[pu * cal.zone_borough.shape[0] + do]
        + cal.hour_borough_effect[cal.zone_borough[pu], (dow >= 5).astype(np.int64), hour]
        + season[:, 0]
        + zones[0, pu]
        + zones[1, do]
        + level
    )
    # Each trip draws from its distance group's quantile row: interpolate by position in the level
    # grid, indexing the flattened table (a per-trip copy of the rows would cost n x levels memory).
    table = cal.resid_q[noise_segment]
    levels = table.shape[1]
    group = np.searchsorted(cal.resid_edges, distance, side="right")
    position = np.interp(rng.random(len(distance)), cal.fine, np.arange(levels, dtype=np.float64))
    lo = np.minimum(np.floor(position).astype(np.int64), levels - 2)
    frac = position - lo
    flat = table.reshape(-1)
    noise = flat[group * levels + lo] * (1 - frac) + flat[group * levels + lo + 1] * frac
    noise *= cal.noise_scale[cal.zone_borough[pu], hour]
    return np.exp(log_minutes + noise)


@dataclass
class _Trips:
    segment: np.ndarray  # index into _SEGMENTS
    pickup_us: np.ndarray
    pu: np.ndarray
    do: np.ndarray
    distance: np.ndarray
    minutes: np.ndarray


def _sample_trips(
    rng: np.random.Generator,
    cal: _Calibration,
    anchors: _Anchors,
    season: _Season,
    counts: dict[str, int],
    month: str,
    seed: int,
) -> _Trips:
    year, mon = parse_month(month)
    first = date(year, mon, 1)
    days = calendar.monthrange(year, mon)[1]
    zones = _zone_drift(seed, month)
    parts = []
    for code, name in enumerate(_SEGMENTS):
        n = counts[name]
        seg = cal.segments[name]
        pickup = _pickups(rng, seg, season.hour_weight, n, first, days)
        pu, do, distance = _zones_and_distance(rng, cal, seg, n, season.distance_factor)
        noise_segment = "M" if name == "M" else "S"
        # The calendar carries the street-hail speed of the month; the anchors keep only how much
        # slower the app rows run than street hails in that era.
        level = anchors.value("level", noise_segment) - anchors.value("level", "S")
        minutes = _durations(rng, cal, noise_segment, level, season.speed, zones, pu, do, distance, pickup)
        parts.append((np.full(n, code, dtype=np.int8), pickup, pu, do, distance, minutes))
    return _Trips(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _add_junk(
    rng: np.random.Generator, cal: _Calibration, anchors: _Anchors, trips: _Trips, negotiated: np.ndarray
) -> None:
    """Turn a real-sized share of rows into the kinds of garbage real months contain."""
    n = len(trips.distance)
    # A negotiated fare (RatecodeID 5) has no distance about a third of the time, metered trips
    # rarely: tying the two keeps dispatched trips as rare among clean rows as in real months.
    p_zero = np.where(
        negotiated,
        anchors.value("junk", "zero_distance_negotiated"),
        anchors.value("junk", "zero_distance_other"),
    )
    others = np.cumsum(
        [anchors.value("junk", k) for k in ("sub_minute", "over_hour", "huge_distance")]
        + [NEGATIVE_DURATION_SHARE]
    )
    u = rng.random(n)
    # kind: 0 zero distance, 1 sub-minute, 2 over an hour, 3 huge distance, 4 negative, 5 clean
    kind = np.where(u < p_zero, 0, 1 + np.searchsorted(others, (u - p_zero) / (1 - p_zero), side="right"))
    v = rng.random(n)
    junk = cal.raw["junk"]
    zero = kind == 0
    trips.distance[zero] = 0.0
    trips.minutes[zero] = _quantile_draw(junk["zero_distance_duration_q"], cal.junk, v[zero])
    sub = kind == 1
    trips.minutes[sub] = v[sub] * 0.99
    trips.distance[sub] = np.maximum(
        np.round(_quantile_draw(junk["sub_minute_distance_q"], cal.junk, rng.random(int(sub.sum()))), 2), 0.01
    )
    over = kind == 2
    trips.minutes[over] = _quantile_draw(junk["over_hour_duration_q"], cal.junk, v[over]) + 0.5
    huge = kind == 3
    trips.distance[huge] = np.round(_quantile_draw(junk["huge_distance_q"], cal.junk, v[huge]), 2)
    negative = kind == 4
    trips.minutes[negative] = -(0.5 + 59.0 * v[negative])


def _fares(
    rng: np.random.Generator,
    cal: _Calibration,
    anchors: _Anchors,
    trips: _Trips,
    full: np.ndarray,
    rate_code: np.ndarray,
    payment: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fare columns: metered fare from distance and time, plus the month's surcharges and tips."""
    n = len(trips.distance)
    out = {name: np.zeros(n) for name in ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount")}
    out["improvement_surcharge"] = np.zeros(n)
    fares = anchors.fares
    minutes = np.clip(trips.minutes, 0.0, 180.0)
    distance = np.clip(trips.distance, 0.0, 100.0)
    for seg_name, rows in (("S", full), ("M", ~full)):
        table = fares.get(seg_name) or fares["S"]
        idx = np.flatnonzero(rows)
        if idx.size == 0:
            continue
        coef = table["fare_coef"]
        metered = coef[0] + coef[1] * distance[idx] + coef[2] * minutes[idx]
        rel = _quantile_draw(table["fare_rel_quantiles"], cal.coarse, rng.random(idx.size))
        fare = np.maximum(metered * rel, coef[0])
        if seg_name == "S":
            negotiated = rate_code[idx] == 5
            flat = _quantile_draw(table["negotiated_fare_quantiles"], cal.coarse, rng.random(idx.size))
            fare = np.where(negotiated, flat, fare)
        out["fare_amount"][idx] = np.round(fare, 2)
        for column in ("extra", "mta_tax", "improvement_surcharge"):
            out[column][idx] = _categorical(rng, table[column], idx.size)
        group = np.searchsorted(cal.resid_edges, distance[idx], side="right")
        tolled = rng.random(idx.size) < np.array(table["toll_share_by_group"])[group]
        toll = _categorical(rng, table["toll_values"], idx.size)
        out["tolls_amount"][idx] = np.where(tolled, toll, 0.0)
        tips_possible = np.ones(idx.size, dtype=bool) if seg_name == "M" else payment[idx] == 1
        tipped = tips_possible & (rng.random(idx.size) >= table["tip_zero_share"])
        rate = _quantile_draw(table["tip_rate_quantiles"], cal.coarse, rng.random(idx.size))
        out["tip_amount"][idx] = np.where(tipped, np.round(rate * out["fare_amount"][idx], 2), 0.0)

    pu_b = cal.zone_borough[trips.pu]
    do_b = cal.zone_borough[trips.do]
    s_table = fares["S"]
    # Keyed pickup borough * 10 + dropoff borough: the surcharge is geographic (trips touching
    # Manhattan below 96th Street), which the borough pair approximates.
    congestion_p = np.zeros(10 * 10)
    for key, p in s_table["congestion_by_borough_pair"].items():
        congestion_p[int(key)] = p
    charged = rng.random(n) < congestion_p[pu_b * 10 + do_b]
    out["congestion_surcharge"] = np.where(full, np.where(charged, s_table["congestion_value"], 0.0), np.nan)
    if "cbd_fee" in fares:
        cbd = fares["cbd_fee"]
        p_zone = np.zeros(cal.zone_borough.shape[0] + 1)
        for key, p in cbd["dropoff_zones"].items():
            p_zone[int(key)] = max(p_zone[int(key)], p)
        p_pickup = np.zeros_like(p_zone)
        for key, p in cbd["pickup_zones"].items():
            p_pickup[int(key)] = p
        p = np.maximum(p_zone[trips.do], p_pickup[trips.pu])
        out["cbd_congestion_fee"] = np.where(full, np.where(rng.random(n) < p, cbd["value"], 0.0), np.nan)
    total = sum(
        out[c]
        for c in ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge")
    )
    total = total + np.nan_to_num(out["congestion_surcharge"])
    if "cbd_congestion_fee" in out:
        total = total + np.nan_to_num(out["cbd_congestion_fee"])
    out["total_amount"] = np.round(total, 2)
    return out


# A month above this many rows is generated in chunks of at most this size, each from its own
# random stream, so memory stays bounded at any month size (about 0.5 GB per million rows while a
# chunk is built). A month at or below it is one chunk, drawn exactly as before chunking existed.
CHUNK_ROWS = 1_000_000


def generate_month(month: str, params: SyntheticParams) -> pa.Table:
    """One synthetic Green Taxi month in TLC's raw schema for that month; deterministic."""
    return pa.concat_tables(generate_month_chunks(month, params))


def generate_month_chunks(month: str, params: SyntheticParams) -> Iterator[pa.Table]:
    """The month as consecutive tables of at most :data:`CHUNK_ROWS` rows; deterministic.

    Each chunk is ordered as a real file is (full rows first, then the missing block, by pickup); a
    chunked month is those chunks one after the other.
    """
    year, mon = parse_month(month)
    cal = _calibration()
    anchors = _Anchors(cal, month)
    season = _season(cal, month)
    rng = np.random.default_rng([params.seed, year, mon])
    n = _row_count(rng, params, season, year, mon)
    if n <= CHUNK_ROWS:
        yield _generate(rng, n, month, params, cal, anchors, season)
        return
    chunks = -(-n // CHUNK_ROWS)
    for i in range(chunks):
        size = n // chunks + (1 if i < n % chunks else 0)
        chunk_rng = np.random.default_rng([params.seed, year, mon, i + 1])
        yield _generate(chunk_rng, size, month, params, cal, anchors, season)


def _generate(
    rng: np.random.Generator,
    n: int,
    month: str,
    params: SyntheticParams,
    cal: _Calibration,
    anchors: _Anchors,
    season: _Season,
) -> pa.Table:
    shifted = month_index(month) >= month_index(params.shift_month)
    long_share = params.shift_long_trip_share if shifted else 0.0
    missing_share = anchors.value("missing_share")
    u = rng.random(n)
    counts = {
        "L": int((u < long_share).sum()),
        "M": int(((u >= long_share) & (u < long_share + (1 - long_share) * missing_share)).sum()),
    }
    counts["S"] = n - counts["L"] - counts["M"]
    trips = _sample_trips(rng, cal, anchors, season, counts, month, params.seed)
    if shifted:
        trips.minutes /= params.shift_speed_factor

    seg = trips.segment
    full = seg != 1  # every row outside the missing block has all of its fields
    long = seg == 2

    vendor1 = np.select(
        [seg == 0, seg == 1],
        [anchors.value("vendor1", "S"), anchors.value("vendor1", "M")],
        LONG_VENDOR1_SHARE,
    )
    vendor = np.where(rng.random(n) < vendor1, 1, 2)

    rate_trip = anchors.shares("rate_trip")
    keys = sorted(rate_trip)
    pick = _pick(_cdf([rate_trip[k] for k in keys]), rng.random(n))
    rate_code = np.array([float(k.split(",")[0]) for k in keys])[pick]
    trip_type = np.array([float(k.split(",")[1]) for k in keys])[pick]
    dispatched = long & (rng.random(n) < LONG_DISPATCH_SHARE)
    rate_code = np.where(dispatched, 5.0, rate_code)
    trip_type = np.where(dispatched, 2.0, trip_type)

    passengers = _categorical(rng, anchors.shares("passenger_count"), n)
    long_passengers = _categorical(rng, {str(k): v for k, v in LONG_PASSENGERS.items()}, n)
    passengers = np.where(long, long_passengers, passengers)
    payment = _categorical(rng, anchors.shares("payment_type"), n)
    flag_y = rng.random(n) < anchors.value("flag_y")

    _add_junk(rng, cal, anchors, trips, negotiated=full & ~long & (rate_code == 5))

    money = _fares(rng, cal, anchors, trips, full, rate_code, payment)

    codes = {
        "VendorID": vendor,
        "RatecodeID": rate_code,
        "passenger_count": passengers,
        "payment_type": payment,
        "trip_type": trip_type,
    }
    return _raw_table(month, trips, full, codes, flag_y, money)


def _raw_table(
    month: str,
    trips: _Trips,
    full: np.ndarray,
    codes: dict[str, np.ndarray],
    flag_y: np.ndarray,
    money: dict[str, np.ndarray],
) -> pa.Table:
    """The sampled month as a TLC file of its era: its schema, timestamps, row order and nulls."""
    n = len(full)
    # Timestamps are whole seconds; the missing block's are whole minutes, as TLC publishes them.
    minute_rows = ~full
    pickup = np.where(minute_rows, trips.pickup_us // _US_PER_MINUTE * _US_PER_MINUTE, trips.pickup_us)
    duration_us = np.round(trips.minutes * 60.0).astype(np.int64) * _US_PER_SECOND
    duration_us = np.where(
        minute_rows, np.round(trips.minutes).astype(np.int64) * _US_PER_MINUTE, duration_us
    )
    dropoff = pickup + duration_us

    # Real files list the fully-populated rows first and the missing block after, each by pickup.
    order = np.lexsort((trips.pu, pickup, minute_rows))

    schema = tlc_raw_schema(month)
    old_era = schema.field("RatecodeID").type == pa.float64()

    def code(values: np.ndarray) -> pa.Array:
        # Old-era files store these codes as doubles; both eras store "unknown" as null (pandas
        # shows the old ones as NaN).
        values = values[order] if old_era else values[order].astype(np.int64)
        return pa.array(values, type=pa.float64() if old_era else pa.int64(), mask=~full[order])

    flag_type = schema.field("store_and_fwd_flag").type
    # A null condition gives a null flag: the missing block has none.
    flag = pc.if_else(
        pa.array(flag_y[order], mask=~full[order]), pa.scalar("Y", flag_type), pa.scalar("N", flag_type)
    )
    columns: dict[str, pa.Array] = {
        "VendorID": pa.array(codes["VendorID"][order], type=schema.field("VendorID").type),
        "lpep_pickup_datetime": pa.array(pickup[order], type=pa.timestamp("us")),
        "lpep_dropoff_datetime": pa.array(dropoff[order], type=pa.timestamp("us")),
        "store_and_fwd_flag": flag,
        "RatecodeID": code(codes["RatecodeID"]),
        "PULocationID": pa.array(trips.pu[order], type=schema.field("PULocationID").type),
        "DOLocationID": pa.array(trips.do[order], type=schema.field("DOLocationID").type),
        "passenger_count": code(codes["passenger_count"]),
        "trip_distance": pa.array(trips.distance[order], type=pa.float64()),
        "ehail_fee": pa.nulls(n, schema.field("ehail_fee").type),
        "payment_type": code(codes["payment_type"]),
        "trip_type": code(codes["trip_type"]),
    }
    for name in (
        "fare_amount",
        "extra",
        "mta_tax",
        "tip_amount",
        "tolls_amount",
        "improvement_surcharge",
        "total_amount",
        "congestion_surcharge",
        "cbd_congestion_fee",
    ):
        if name in money:
            values = money[name][order]
            columns[name] = pa.array(values, type=pa.float64(), from_pandas=True)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


class SyntheticSource(DataSource):
    """The generator as a source: any month exists, and its content is decided by the params."""

    name = "synthetic"
    code_modules = ("core.sources.synthetic",)

    def chunks(self, month: str) -> tuple[Iterator[pa.Table], str]:
        return generate_month_chunks(month, self.params.synthetic), f"synthetic month {month}"

    def identity(self, month: str) -> dict[str, Any]:
        calibration = resources.files("core.resources").joinpath(CALIBRATION_FILE)
        return {
            "source": "synthetic",
            "month": month,
            "synthetic": self.params.synthetic.model_dump(),
            "calibration": hashlib.sha256(calibration.read_bytes()).hexdigest(),
        }

    def latest(self, this_month: str) -> str:
        # The generator can make any month; "published" means complete, i.e. last month.
        return add_months(this_month, -1)

    def settings(self) -> dict[str, Any]:
        return {"rows_per_month": self.params.synthetic.rows_per_month, "shift_month": self.shift_month}

    @property
    def shift_month(self) -> str:
        return self.params.synthetic.shift_month
