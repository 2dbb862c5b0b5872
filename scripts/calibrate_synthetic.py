"""Derive core/resources/synthetic_calibration.json from the real TLC months in ../shared/data/tlc.

The synthetic generator (core/sources/synthetic.py) samples every month from these statistics, so its
trips look like real Green Taxi trips without shipping a single real row: the JSON holds only
aggregates (zone and zone-pair shares, fitted effects, quantiles), never trip records.

What is derived, and why it is split this way:
  * three trip *segments*: "S" street hails with every field filled, "M" the "missing block"
    (passenger_count, RatecodeID, payment_type, trip_type, store_and_fwd_flag and
    congestion_surcharge all null: 47% of 2021-01, ~4% of 2025-01) whose trips are longer and
    start elsewhere, and "L" the long-trip mix (real trips of 6+ miles) that the regime shift
    draws from. Each gets its own zone, zone-pair, distance and pickup-time tables;
  * one duration model shared by all segments, fitted by backfitting: log duration = distance
    curve + hour x weekday + pickup/dropoff-zone levels and distance slopes + frequent zone-pair
    effects + a borough x hour rhythm + a per-month/segment level. Its noise is the empirical
    within-month residual distribution (quantiles per distance group, scaled per pickup borough
    and hour), so the heavy tails that set a model's RMSE are the real ones;
  * per real month ("anchors"): the shares that moved over the years (missing block, vendors,
    rate codes, passengers, payments, junk rows) and the fare schedule; the generator
    interpolates the shares between anchors and steps the fare schedule;
  * a smooth calendar ("time"): how speed by weekday/weekend hour, trip length, the pickup hours
    and the volume move with the month of the year (two harmonics) and a slow secular trend,
    fitted across all real months with the 2021 lockdown months as an era of their own. Real
    months drift slowly this way (a model gets a few percent worse per season), and the
    generator reproduces it, so a backtest on synthetic data shows what a stale model costs.

Usage: python scripts/calibrate_synthetic.py [TLC_DIR] [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.features import ZONE_ID_RANGE, filter_mask
from core.io import write_text
from core.months import month_bounds
from core.params import FilterParams
from core.schema import normalize

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TLC_DIR = ROOT.parent / "shared" / "data" / "tlc"
DEFAULT_OUT = ROOT / "core" / "resources" / "synthetic_calibration.json"

N_ZONES = ZONE_ID_RANGE[1]
# Log-distance bins of the duration model's distance curve (miles); the generator interpolates
# between bin centres, so the curve is smooth rather than a staircase.
DIST_EDGES = np.exp(np.linspace(np.log(0.05), np.log(60.0), 25))
# Residual spread depends strongly on distance (a 0.5-mile hop can take 2 or 20 minutes), so the
# noise quantiles are kept per distance group.
RESID_GROUP_EDGES = [0.0, 0.7, 1.5, 3.0, 6.0, 12.0, 1e9]
# Quantile levels of the stored noise distributions. The extreme tails get their own levels and
# the sample minimum/maximum are left out: the generator interpolates between levels, and a
# straight line from the 99th percentile to a one-in-100k maximum would fatten the tail tenfold.
FINE_LEVELS = np.concatenate(
    [[0.0005, 0.001, 0.002, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.998, 0.999, 0.9995]]
)
COARSE_LEVELS = np.concatenate([[0.005, 0.01, 0.025], np.linspace(0.05, 0.95, 19), [0.975, 0.99, 0.995]])
JUNK_LEVELS = np.linspace(0, 1, 41)  # junk is junk: its full range, extremes included
LONG_TRIP_MI = 6.0
# Zone pairs kept explicitly per segment; rarer pairs fall back to borough-level tables.
MAX_PAIRS = {"S": 2200, "M": 1600, "L": 1400}
MIN_PAIR_TRIPS_FOR_DISTANCE = 8
MIN_PAIR_TRIPS_FOR_EFFECT = 40
LOG_DIST_CENTRE = float(np.log(2.0))  # a typical trip; slopes pivot around it
NOISE_SCALE_PRIOR = 200.0  # pseudo-trips at scale 1 for the noise-scale cells
SHRINK = 30.0  # backfitting shrinkage (pseudo-trips) so sparse zones keep effects near zero
# The smooth calendar: two harmonics of the month of the year (a winter/summer swing and the
# spring/autumn bumps) are as much as 19 months with gaps (no June, August, September) support.
SEASON_HARMONICS = 2
# Lockdown traffic: months up to this one are an era of their own, not a point on the trend line.
PANDEMIC_END = "2021-12"
# Ridge (in squared design units) on the harmonics: cells with few trips stay near the mean season.
SEASON_RIDGE = 0.05
ZONE_DRIFT_MIN_RHO = 0.8
ZONE_DRIFT_MIN_TRIPS = 300  # per month, in pickups and dropoffs, for a zone's effect to be measured


def _round(values: Any, digits: int = 4) -> Any:
    """Round floats to ``digits`` significant digits so the JSON stays small and diff-able."""
    if isinstance(values, dict):
        return {k: _round(v, digits) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [_round(v, digits) for v in values]
    if isinstance(values, np.ndarray):
        return _round(values.tolist(), digits)
    if isinstance(values, float | np.floating):
        value = float(values)
        if value == 0.0 or not np.isfinite(value):
            return 0.0
        return float(f"{value:.{digits}g}")
    if isinstance(values, np.integer):
        return int(values)
    return values


def _shares(series: pd.Series, min_share: float = 1e-4) -> dict[str, float]:
    counts = series.dropna().value_counts(normalize=True)
    counts = counts[counts >= min_share]
    counts = counts / counts.sum()
    return {_key(k): float(v) for k, v in counts.sort_index().items()}


def _key(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def load_months(folder: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("green_tripdata_*.parquet")):
        month = path.stem.split("_")[-1]
        df = normalize(pq.read_table(path), path.name).to_pandas()
        df["month"] = month
        frames.append(df)
    if not frames:
        raise SystemExit(f"no green_tripdata_*.parquet files in {folder}")
    df = pd.concat(frames, ignore_index=True)
    df["duration"] = (df["lpep_dropoff_datetime"] - df["lpep_pickup_datetime"]).dt.total_seconds() / 60.0
    # The block is all-or-nothing in every real month (checked: 100% co-null), so one column decides.
    df["segment"] = np.where(df["passenger_count"].isna() & df["trip_type"].isna(), "M", "S")
    df["hour"] = df["lpep_pickup_datetime"].dt.hour
    df["dow"] = df["lpep_pickup_datetime"].dt.dayofweek
    return df


def clean_mask(df: pd.DataFrame) -> pd.Series:
    """The pipeline's own filters (core.features.filter_mask), month by month.

    With FilterParams' defaults (params.yaml's values), not params.yaml itself: the calibration
    describes real months, and a user's filter experiment must not change the generator.
    """
    mask = pd.Series(False, index=df.index)
    for month, rows in df.groupby("month").groups.items():
        start, end = month_bounds(month)
        mask[rows] = filter_mask(df.loc[rows], start, end, FilterParams())
    return mask


def zone_boroughs(folder: Path) -> tuple[list[str], np.ndarray]:
    lookup = pd.read_csv(folder / "taxi_zone_lookup.csv")
    boroughs = sorted(lookup["Borough"].fillna("Unknown").unique())
    code = np.full(N_ZONES + 1, boroughs.index("Unknown"), dtype=np.int64)
    for zone, borough in zip(lookup["LocationID"], lookup["Borough"].fillna("Unknown"), strict=True):
        if 1 <= zone <= N_ZONES:
            code[zone] = boroughs.index(borough)
    return boroughs, code


def segment_tables(trips: pd.DataFrame, borough_of: np.ndarray, n_boroughs: int, max_pairs: int) -> dict:
    """Where and when a segment's trips start and end, and how far they go."""
    pu = trips["PULocationID"].to_numpy()
    do = trips["DOLocationID"].to_numpy()
    logd = np.log(trips["trip_distance"].to_numpy())
    n = len(trips)

    hour_dow = np.zeros((7, 24))
    np.add.at(hour_dow, (trips["dow"].to_numpy(), trips["hour"].to_numpy()), 1.0)
    # Weekday counts are per calendar day: a month with five Fridays must not look Friday-heavy.
    days_per_dow = trips.groupby("dow")["lpep_pickup_datetime"].apply(lambda s: s.dt.normalize().nunique())
    hour_dow /= days_per_dow.reindex(range(7)).to_numpy()[:, None]
    hour_dow /= hour_dow.sum()

    pu_counts = np.bincount(pu, minlength=N_ZONES + 1).astype(float)
    pair_id = pu * (N_ZONES + 1) + do
    pair_counts = pd.Series(pair_id).value_counts()
    top = pair_counts.iloc[:max_pairs]
    top = top[top >= 3]
    pair_stats = pd.DataFrame({"pair": pair_id, "logd": logd}).groupby("pair")["logd"]
    median = pair_stats.median()
    iqr_sigma = (pair_stats.quantile(0.75) - pair_stats.quantile(0.25)) / 1.349

    # Fallback for the rarer pairs: dropoff borough given pickup borough, then dropoff zone within it.
    in_top = np.isin(pair_id, top.index.to_numpy())
    rest = ~in_top
    fb_borough = np.zeros((n_boroughs, n_boroughs))
    np.add.at(fb_borough, (borough_of[pu[rest]], borough_of[do[rest]]), 1.0)
    fb_zone = np.bincount(do[rest], minlength=N_ZONES + 1).astype(float)

    # Distance for fallback pairs and for pairs too rare to have their own median.
    bpair = borough_of[pu] * n_boroughs + borough_of[do]
    same = pu == do
    frame = pd.DataFrame({"bpair": bpair, "logd": logd, "same": same, "pub": borough_of[pu]})
    borough_dist = {}
    # Only from the trips the fallback stands in for: rare pairs are longer than the borough's
    # typical (frequent, short) pairs, and using all trips would shrink their distances.
    for key, group in frame[~frame["same"] & rest].groupby("bpair")["logd"]:
        if len(group) >= 20:
            q25, q50, q75 = np.quantile(group, [0.25, 0.5, 0.75])
            borough_dist[str(key)] = [q50, max((q75 - q25) / 1.349, 0.1)]
    same_dist = {}
    for key, group in frame[frame["same"]].groupby("pub")["logd"]:
        if len(group) >= 20:
            q25, q50, q75 = np.quantile(group, [0.25, 0.5, 0.75])
            same_dist[str(key)] = [q50, max((q75 - q25) / 1.349, 0.1)]

    pairs = []
    for pid, count in top.items():
        p, d = divmod(int(pid), N_ZONES + 1)
        row: list[Any] = [p, d, count / pu_counts[p]]
        if count >= MIN_PAIR_TRIPS_FOR_DISTANCE:
            row += [median[pid], max(iqr_sigma[pid], 0.05)]
        pairs.append(row)
    pairs.sort(key=lambda r: (r[0], r[1]))

    # Standardised log-distance residuals (pooled over pairs) give the distance noise its real,
    # heavy-tailed shape; a lognormal alone misses the detours and the GPS glitches.
    pair_mu = median.reindex(pair_id).to_numpy()
    pair_sigma = np.maximum(iqr_sigma.reindex(pair_id).to_numpy(), 0.05)
    well_known = pair_counts.reindex(pair_id).to_numpy() >= 30
    z = ((logd - pair_mu) / pair_sigma)[well_known]
    z_quantiles = np.quantile(np.clip(z, -8, 8), FINE_LEVELS)

    return {
        "rows": n,
        "hour_dow": hour_dow,
        "pu": [[z_, pu_counts[z_] / n] for z_ in range(1, N_ZONES + 1) if pu_counts[z_] > 0],
        "pairs": pairs,
        "fallback_borough": (fb_borough / np.maximum(fb_borough.sum(axis=1, keepdims=True), 1)),
        "fallback_zone": [
            [z_, fb_zone[z_] / fb_zone.sum()] for z_ in range(1, N_ZONES + 1) if fb_zone[z_] > 0
        ],
        "borough_distance": borough_dist,
        "same_zone_distance": same_dist,
        "distance_z_quantiles": z_quantiles,
        "same_zone_share": float(same.mean()),
    }


Factor = tuple[np.ndarray, int, float, "np.ndarray | None"]


def _backfit(y: np.ndarray, factors: dict[str, Factor], sweeps: int = 12) -> dict:
    """Additive effects by backfitting: each factor in turn absorbs the (shrunken) mean residual.

    A factor with a covariate ``x`` is a per-code slope (effect * x) instead of a per-code level.
    """
    effects: dict[str, Any] = {name: np.zeros(size) for name, (_, size, _, _) in factors.items()}
    intercept = float(y.mean())

    def term(name: str) -> np.ndarray:
        codes, _, _, x = factors[name]
        return effects[name][codes] if x is None else effects[name][codes] * x

    for _ in range(sweeps):
        for name, (codes, size, shrink, x) in factors.items():
            partial = y - intercept - sum(term(o) for o in factors if o != name)
            if x is None:
                effect = np.bincount(codes, weights=partial, minlength=size) / (
                    np.bincount(codes, minlength=size) + shrink + 1e-9
                )
            else:
                effect = np.bincount(codes, weights=partial * x, minlength=size) / (
                    np.bincount(codes, weights=x * x, minlength=size) + shrink + 1e-9
                )
            if name == "pair":
                effect[-1] = 0.0  # the bucket of all other pairs has no effect of its own
            if name != "dist" and x is None:
                # Centre on the trip-weighted mean so the intercept keeps the overall level.
                counts = np.bincount(codes, minlength=size)
                effect -= np.sum(effect * counts) / counts.sum()
            effects[name] = effect
    effects["intercept"] = intercept
    return effects


def _duration_factors(
    trips: pd.DataFrame, borough_of: np.ndarray, n_boroughs: int, level: pd.Series
) -> tuple[dict[str, Factor], np.ndarray]:
    centres = np.sqrt(DIST_EDGES[:-1] * DIST_EDGES[1:])
    dist_bin = np.clip(
        np.searchsorted(DIST_EDGES, trips["trip_distance"].to_numpy()) - 1, 0, len(centres) - 1
    )
    pu = trips["PULocationID"].to_numpy()
    do = trips["DOLocationID"].to_numpy()
    level_codes, level_names = pd.factorize(level, sort=True)
    # Frequent zone pairs get their own effect (a route's bridges and avenues), and the pickup
    # borough its own daily rhythm (Manhattan's rush hour is not Queens'): both are structure a
    # model can learn from pu_zone/do_zone/hour, so leaving them in the noise would make synthetic
    # months harder to predict than real ones.
    pair_id = pu * (N_ZONES + 1) + do
    pair_counts = pd.Series(pair_id).value_counts()
    frequent = np.sort(pair_counts[pair_counts >= MIN_PAIR_TRIPS_FOR_EFFECT].index.to_numpy())
    pair_codes = np.where(np.isin(pair_id, frequent), np.searchsorted(frequent, pair_id), len(frequent))
    weekend = (trips["dow"].to_numpy() >= 5).astype(int)
    # How duration grows with distance depends on where the trip runs (a highway out of Harlem, or
    # streets across Brooklyn): per-zone slopes on centred log distance.
    x = np.log(trips["trip_distance"].to_numpy()) - LOG_DIST_CENTRE
    factors: dict[str, Factor] = {
        "dist": (dist_bin, len(centres), 0.0, None),
        "hour_dow": (trips["dow"].to_numpy() * 24 + trips["hour"].to_numpy(), 168, SHRINK, None),
        "pu_zone": (pu, N_ZONES + 1, SHRINK, None),
        "do_zone": (do, N_ZONES + 1, SHRINK, None),
        "pu_slope": (pu, N_ZONES + 1, SHRINK, x),
        "do_slope": (do, N_ZONES + 1, SHRINK, x),
        "hour_slope": (trips["dow"].to_numpy() * 24 + trips["hour"].to_numpy(), 168, SHRINK, x),
        "pair": (pair_codes, len(frequent) + 1, SHRINK, None),
        "hour_borough": (
            (borough_of[pu] * 2 + weekend) * 24 + trips["hour"].to_numpy(),
            n_boroughs * 48,
            SHRINK,
            None,
        ),
        "level": (level_codes, len(level_names), 0.0, None),
    }
    return factors, frequent


def _smooth_curve(effects: dict, factors: dict) -> np.ndarray:
    """The distance staircase as a curve through bin centres, as the generator evaluates it."""
    centres = np.sqrt(DIST_EDGES[:-1] * DIST_EDGES[1:])
    counts = np.bincount(factors["dist"][0], minlength=len(centres))
    filled = counts > 0  # empty bins borrow their neighbours
    curve = np.interp(np.log(centres), np.log(centres[filled]), effects["dist"][filled])
    # Past the fastest bin a longer trip never takes less time; the sparse far bins (a handful of
    # 50-mile trips) would otherwise bend the curve down.
    fastest = int(np.argmin(curve))
    curve[fastest:] = np.maximum.accumulate(curve[fastest:])
    return curve


def _residuals(trips: pd.DataFrame, effects: dict, factors: dict) -> np.ndarray:
    centres = np.sqrt(DIST_EDGES[:-1] * DIST_EDGES[1:])
    curve = _smooth_curve(effects, factors)
    fitted = effects["intercept"] + np.interp(
        np.log(trips["trip_distance"].to_numpy()), np.log(centres), curve
    )
    for name, (codes, _, _, x) in factors.items():
        if name != "dist":
            fitted = fitted + (effects[name][codes] if x is None else effects[name][codes] * x)
    return np.log(trips["duration"].to_numpy()) - fitted


def fit_duration(
    trips: pd.DataFrame, borough_of: np.ndarray, n_boroughs: int
) -> tuple[dict, pd.Series, np.ndarray]:
    """Backfit log duration on additive effects.

    Returns the model, each month/segment's level and, per trip, what is specific to its month
    (the street-hail level of the month plus the trip's residual): the input of the calendar fit.
    """
    level = trips["month"] + "/" + trips["segment"]
    factors, frequent = _duration_factors(trips, borough_of, n_boroughs, level)
    effects = _backfit(np.log(trips["duration"].to_numpy()), factors)
    resid = _residuals(trips, effects, factors)
    level_of = pd.Series(effects["level"], index=sorted(level.unique()))
    # App rows (segment M) keep their own offset in the anchors; what the months share is the
    # street-hail level, so every trip is measured against that.
    month_effect = resid + level_of.reindex(trips["month"] + "/S").to_numpy()

    # The noise is measured *within* each month: pooled residuals would also hold how months
    # differ from each other (2021's pandemic rush hours, zones that changed), structure a model
    # trained on one month does not face, and synthetic months would come out noisier than real.
    within = np.empty(len(trips))
    zone_effects: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for month in trips["month"].unique():
        sel = (trips["month"] == month).to_numpy()
        month_trips = trips[sel]
        month_factors, _ = _duration_factors(month_trips, borough_of, n_boroughs, month_trips["segment"])
        month_effects = _backfit(np.log(month_trips["duration"].to_numpy()), month_factors)
        within[sel] = _residuals(month_trips, month_effects, month_factors)
        counts = np.bincount(month_trips["PULocationID"].to_numpy(), minlength=N_ZONES + 1)
        counts = np.minimum(
            counts, np.bincount(month_trips["DOLocationID"].to_numpy(), minlength=N_ZONES + 1)
        )
        zone_effects[month] = (month_effects["pu_zone"] + month_effects["do_zone"], counts)

    group = np.searchsorted(RESID_GROUP_EDGES, trips["trip_distance"].to_numpy(), side="right") - 1
    is_m = (trips["segment"] == "M").to_numpy()
    n_groups = len(RESID_GROUP_EDGES) - 1

    def cells() -> list[tuple[str, int, np.ndarray]]:
        out = []
        for seg, rows in (("S", ~is_m), ("M", is_m)):
            for g in range(n_groups):
                sel = (group == g) & rows
                out.append((seg, g, sel if sel.sum() >= 500 else group == g))  # thin: both segments
        return out

    # How noisy a trip is also depends on where and when it starts (3 a.m. in the Bronx vs
    # midday in Manhattan); since the error is counted in minutes, that matters for a model's
    # RMSE. A scale per pickup borough and hour multiplies the standardised noise.
    standard = np.zeros(len(trips))
    for _, _, sel in cells():
        standard[sel] = within[sel] / within[sel].std()
    when_where = borough_of[trips["PULocationID"].to_numpy()] * 24 + trips["hour"].to_numpy()
    size = n_boroughs * 24
    scale = np.sqrt(
        (np.bincount(when_where, weights=standard**2, minlength=size) + NOISE_SCALE_PRIOR)
        / (np.bincount(when_where, minlength=size) + NOISE_SCALE_PRIOR)
    )
    scaled = within / scale[when_where]
    resid_q: dict[str, list] = {"S": [], "M": []}
    for seg, _, sel in cells():
        resid_q[seg].append(np.quantile(scaled[sel], FINE_LEVELS))
    level_names = sorted(level.unique())
    model = {
        "intercept": effects["intercept"],
        "dist_log_centres": np.log(np.sqrt(DIST_EDGES[:-1] * DIST_EDGES[1:])),
        "dist_effect": _smooth_curve(effects, factors),
        "hour_dow": effects["hour_dow"].reshape(7, 24),
        "pu_zone": effects["pu_zone"],
        "do_zone": effects["do_zone"],
        "log_dist_centre": LOG_DIST_CENTRE,
        "pu_slope": effects["pu_slope"],
        "do_slope": effects["do_slope"],
        "hour_slope": effects["hour_slope"].reshape(7, 24),
        "pair": [
            [int(k) // (N_ZONES + 1), int(k) % (N_ZONES + 1), e]
            for k, e in zip(frequent, effects["pair"][:-1], strict=True)
        ],
        "hour_borough": effects["hour_borough"].reshape(n_boroughs, 2, 24),
        "resid_group_edges": RESID_GROUP_EDGES[1:-1],
        "resid_quantiles": resid_q,
        "noise_scale": scale.reshape(n_boroughs, 24),
        "residual_rmse_pooled": float(np.sqrt(np.mean(resid**2))),
        "residual_rmse_within_month": float(np.sqrt(np.mean(within**2))),
    }
    model["zone_drift"] = zone_drift(zone_effects, float(np.var(within)))
    return model, pd.Series(effects["level"], index=level_names), month_effect


def zone_drift(effects: dict[str, tuple[np.ndarray, np.ndarray]], noise_var: float) -> dict[str, float]:
    """How fast the places drift: the zones' speed effects as a stationary AR(1) across months.

    A zone's month-specific effect (pickup plus dropoff level) differs between two months of the
    same era by 2 sigma^2 (1 - rho^lag) on top of sampling noise; sigma and rho come from the
    spread of those differences by lag, over zones busy enough to measure.
    """
    months = sorted(effects)
    lags: dict[int, list[float]] = {}
    for i, a in enumerate(months):
        for b in months[i + 1 :]:
            if (_month_number(a) <= _month_number(PANDEMIC_END)) != (
                _month_number(b) <= _month_number(PANDEMIC_END)
            ):
                continue
            (ea, na), (eb, nb) = effects[a], effects[b]
            busy = (na >= ZONE_DRIFT_MIN_TRIPS) & (nb >= ZONE_DRIFT_MIN_TRIPS)
            excess = (ea[busy] - eb[busy]) ** 2 - 2 * noise_var * (1 / na[busy] + 1 / nb[busy])
            lags.setdefault(_month_number(b) - _month_number(a), []).append(float(np.mean(excess)))
    lag = np.array(sorted(lags), dtype=np.float64)
    spread = np.array([np.mean(lags[int(k)]) for k in lag])
    weight = np.array([len(lags[int(k)]) for k in lag], dtype=np.float64)
    best = (np.inf, 0.0, 0.0)
    # Slow by construction: a month-to-month jitter is noise the calendar policies cannot fix.
    for rho in np.linspace(ZONE_DRIFT_MIN_RHO, 0.995, 100):
        shape = 2 * (1 - rho**lag)
        var = max(float(np.sum(weight * shape * spread) / np.sum(weight * shape * shape)), 0.0)
        err = float(np.sum(weight * (spread - var * shape) ** 2))
        best = min(best, (err, float(rho), var))
    print("zone drift by lag:", {int(k): round(float(v), 5) for k, v in zip(lag, spread, strict=True)})
    return {"rho": best[1], "sigma": float(np.sqrt(best[2]))}


def _month_number(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def time_design(months: list[str], centre: float) -> np.ndarray:
    """Columns: intercept, trend (years from ``centre``), lockdown era, then cos/sin harmonics."""
    index = np.array([_month_number(m) for m in months], dtype=np.float64)
    moy = np.array([int(m.split("-")[1]) - 1 for m in months], dtype=np.float64)
    columns = [np.ones_like(index), (index - centre) / 12.0, (index <= _month_number(PANDEMIC_END)) * 1.0]
    for k in range(1, SEASON_HARMONICS + 1):
        angle = 2 * np.pi * k * moy / 12.0
        columns += [np.cos(angle), np.sin(angle)]
    return np.column_stack(columns)


def _fit_calendar(design: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ridge (harmonics only) of each column of ``values`` (months x cells) on the design."""
    penalty = np.zeros(design.shape[1])
    penalty[3:] = SEASON_RIDGE
    coef = np.zeros((values.shape[1], design.shape[1]))
    for cell in range(values.shape[1]):
        w = weights[:, cell] / weights[:, cell].mean()
        gram = design.T @ (design * w[:, None]) + np.diag(penalty) * len(design)
        coef[cell] = np.linalg.solve(gram, design.T @ (w * values[:, cell]))
    return coef


def calendar_tables(trips: pd.DataFrame, month_effect: np.ndarray, all_rows: pd.DataFrame) -> dict:
    """How the months differ smoothly: speed by hour, trip length, pickup hours and volume."""
    months = sorted(trips["month"].unique())
    index = np.array([_month_number(m) for m in months], dtype=np.float64)
    centre = float(index.mean())
    design = time_design(months, centre)
    month_code = pd.Categorical(trips["month"], categories=months).codes.astype(np.int64)
    cell = (trips["dow"].to_numpy() >= 5) * 24 + trips["hour"].to_numpy()
    key = month_code * 48 + cell
    # Per month and cell, a line in centred log distance: the level (a typical 2-mile trip) and
    # the slope (how much longer a long trip takes), since seasons move highways and streets
    # differently and a long trip's minutes weigh most in a model's MAE.
    x = np.log(trips["trip_distance"].to_numpy()) - LOG_DIST_CENTRE
    size = len(months) * 48

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(key, weights=w, minlength=size).reshape(len(months), 48)

    counts = np.bincount(key, minlength=size).reshape(len(months), 48).astype(np.float64)
    sx, sxx, sy, sxy = total(x), total(x * x), total(month_effect), total(x * month_effect)
    mean_x = sx / np.maximum(counts, 1)
    var_x = sxx / np.maximum(counts, 1) - mean_x**2
    slope = (sxy / np.maximum(counts, 1) - mean_x * sy / np.maximum(counts, 1)) / np.maximum(var_x, 1e-6)
    level = sy / np.maximum(counts, 1) - slope * mean_x
    speed = _fit_calendar(design, level, counts + 1.0)
    speed_slope = _fit_calendar(design, slope, counts * var_x + 1.0)

    street = (trips["segment"] == "S").to_numpy()
    logd = np.log(trips["trip_distance"].to_numpy())
    mean_logd = np.array([logd[street & (month_code == i)].mean() for i in range(len(months))])
    distance = _fit_calendar(design, (mean_logd - mean_logd.mean())[:, None], np.ones((len(months), 1)))

    # Pickup hours: the month's share of each hour against the all-months share (logs), so the
    # generator can tilt its weekly pattern; weekday and weekend pooled (too few night trips).
    hour_counts = np.bincount(month_code * 24 + trips["hour"].to_numpy(), minlength=len(months) * 24)
    share = hour_counts.reshape(len(months), 24) / np.bincount(month_code, minlength=len(months))[:, None]
    pooled = np.bincount(trips["hour"].to_numpy(), minlength=24) / len(trips)
    tilt = _fit_calendar(design, np.log(share / pooled), hour_counts.reshape(len(months), 24) + 1.0)

    # Volume: rows per day (all rows, junk included, as the generator counts them).
    per_day = np.array(
        [(all_rows["month"] == m).sum() / pd.Period(m, freq="M").days_in_month for m in months]
    )
    volume = _fit_calendar(design, np.log(per_day / per_day.mean())[:, None], np.ones((len(months), 1)))
    return {
        "centre": centre,
        "first": months[0],
        "last": months[-1],
        "pandemic_end": PANDEMIC_END,
        "harmonics": SEASON_HARMONICS,
        "speed": speed.reshape(2, 24, design.shape[1]),
        "speed_slope": speed_slope.reshape(2, 24, design.shape[1]),
        "log_distance": distance[0],
        "hour_tilt": tilt,
        "volume": volume[0],
    }


def fare_tables(month_trips: pd.DataFrame, clean: pd.Series, borough_of: np.ndarray) -> dict:
    """The month's tariff: fare from distance and time, surcharges, tips and tolls by segment."""
    out: dict[str, Any] = {}
    for seg in ("S", "M"):
        seg_all = month_trips[month_trips["segment"] == seg]
        seg_clean = month_trips[clean & (month_trips["segment"] == seg)]
        if len(seg_clean) < 200:
            continue
        metered = seg_clean if seg == "M" else seg_clean[seg_clean["RatecodeID"] == 1]
        a = np.column_stack([np.ones(len(metered)), metered["trip_distance"], metered["duration"]])
        coef, *_ = np.linalg.lstsq(a, metered["fare_amount"].to_numpy(), rcond=None)
        rel = metered["fare_amount"].to_numpy() / np.maximum(a @ coef, 1.0)
        tables: dict[str, Any] = {
            "fare_coef": coef,
            "fare_rel_quantiles": np.quantile(np.clip(rel, 0.2, 5), COARSE_LEVELS),
            "extra": _shares(seg_all["extra"].round(2), 0.003),
            "mta_tax": _shares(seg_all["mta_tax"].round(2), 0.003),
            "improvement_surcharge": _shares(seg_all["improvement_surcharge"].round(2), 0.003),
        }
        tolled = seg_clean["tolls_amount"] > 0
        groups = np.searchsorted(RESID_GROUP_EDGES, seg_clean["trip_distance"].to_numpy(), side="right") - 1
        tables["toll_share_by_group"] = [
            float(tolled[groups == g].mean()) if (groups == g).any() else 0.0
            for g in range(len(RESID_GROUP_EDGES) - 1)
        ]
        tables["toll_values"] = _shares(seg_clean.loc[tolled, "tolls_amount"].round(2), 0.05)
        # Card tips in the full block; the missing block has no payment_type but does have tips.
        tipped = seg_clean if seg == "M" else seg_clean[seg_clean["payment_type"] == 1]
        tip_rate = (tipped["tip_amount"] / tipped["fare_amount"].clip(lower=1)).clip(0, 1)
        tables["tip_zero_share"] = float((tipped["tip_amount"] <= 0).mean())
        tables["tip_rate_quantiles"] = np.quantile(tip_rate[tipped["tip_amount"] > 0], COARSE_LEVELS)
        if seg == "S":
            negotiated = seg_clean.loc[seg_clean["RatecodeID"] == 5, "fare_amount"]
            tables["negotiated_fare_quantiles"] = np.quantile(negotiated.clip(lower=0), COARSE_LEVELS)
            charged = seg_all["congestion_surcharge"].dropna()
            tables["congestion_value"] = float(charged[charged > 0].round(2).mode().iloc[0])
            tables["congestion_by_borough_pair"] = (
                seg_clean.assign(
                    charged=seg_clean["congestion_surcharge"] > 0,
                    bp=borough_of[seg_clean["PULocationID"]] * 10 + borough_of[seg_clean["DOLocationID"]],
                )
                .groupby("bp")["charged"]
                .mean()
                .rename(str)
                .to_dict()
            )
        out[seg] = tables
    cbd = month_trips["cbd_congestion_fee"]
    if cbd.notna().any():
        charged = month_trips.loc[clean & cbd.notna()]
        by_zone = charged.groupby("DOLocationID")["cbd_congestion_fee"].apply(lambda s: float((s > 0).mean()))
        by_pu = charged.groupby("PULocationID")["cbd_congestion_fee"].apply(lambda s: float((s > 0).mean()))
        out["cbd_fee"] = {
            "value": float(cbd[cbd > 0].round(2).mode().iloc[0]),
            # Only zones where the fee is the rule; elsewhere it is (nearly) never charged.
            "dropoff_zones": {str(int(z)): p for z, p in by_zone.items() if p >= 0.2},
            "pickup_zones": {str(int(z)): p for z, p in by_pu.items() if p >= 0.2},
        }
    return out


def anchor_stats(month_trips: pd.DataFrame, clean: pd.Series, levels: pd.Series, month: str) -> dict:
    s_rows = month_trips[month_trips["segment"] == "S"]
    m_rows = month_trips[month_trips["segment"] == "M"]
    duration = month_trips["duration"]
    distance = month_trips["trip_distance"]
    n = len(month_trips)
    rate_trip = (
        s_rows["RatecodeID"].astype("Int64").astype(str)
        + ","
        + s_rows["trip_type"].astype("Int64").astype(str)
    )
    # Rate codes and trip types are drawn jointly: a dispatched trip (trip_type 2) is almost
    # always a negotiated fare (RatecodeID 5), and independent draws would break that.
    joint = rate_trip[~rate_trip.str.contains("<NA>")].value_counts(normalize=True)
    joint = joint[joint >= 1e-4]
    return {
        "missing_share": len(m_rows) / n,
        "level": {seg: float(levels.get(f"{month}/{seg}", np.nan)) for seg in ("S", "M")},
        "vendor1": {
            "S": float((s_rows["VendorID"] == 1).mean()),
            "M": float((m_rows["VendorID"] == 1).mean()),
        },
        "rate_trip": (joint / joint.sum()).to_dict(),
        "passenger_count": _shares(s_rows["passenger_count"]),
        "payment_type": _shares(s_rows["payment_type"]),
        "flag_y": float((s_rows["store_and_fwd_flag"] == "Y").mean()),
        # Rows the pipeline's filters must remove, by kind (shares of all rows).
        "junk": {
            "zero_distance": float((distance == 0).mean()),
            # A negotiated (RatecodeID 5) fare often has no metered distance at all.
            "zero_distance_negotiated": float((distance[month_trips["RatecodeID"] == 5] == 0).mean()),
            "zero_distance_other": float((distance[month_trips["RatecodeID"] != 5] == 0).mean()),
            "sub_minute": float(((duration < 1) & (distance > 0)).mean()),
            "over_hour": float(((duration > 60) & (distance > 0) & (distance <= 100)).mean()),
            "huge_distance": float((distance > 100).mean()),
            "bad_zone": float((~month_trips["PULocationID"].between(1, 263)).mean()),
        },
        "clean_share": float(clean.mean()),
    }


def junk_tables(df: pd.DataFrame) -> dict:
    duration = df["duration"]
    distance = df["trip_distance"]
    qs = JUNK_LEVELS
    return {
        "zero_distance_duration_q": np.quantile(duration[distance == 0].clip(0, 1440), qs),
        "over_hour_duration_q": np.quantile(duration[(duration > 60) & (distance > 0)].clip(60, 1440), qs),
        "sub_minute_distance_q": np.quantile(distance[(duration < 1) & (distance > 0)].clip(0, 100), qs),
        "huge_distance_q": np.quantile(distance[distance > 100], qs),
    }


def main(tlc_dir: str | None = None, out: str | None = None) -> None:
    folder = Path(tlc_dir) if tlc_dir else DEFAULT_TLC_DIR
    dest = Path(out) if out else DEFAULT_OUT
    df = load_months(folder)
    boroughs, borough_of = zone_boroughs(folder)
    clean = clean_mask(df)
    trips = df[clean]
    long_trips = trips[trips["trip_distance"] >= LONG_TRIP_MI]

    segments = {
        seg: segment_tables(rows, borough_of, len(boroughs), MAX_PAIRS[seg])
        for seg, rows in (
            ("S", trips[trips["segment"] == "S"]),
            ("M", trips[trips["segment"] == "M"]),
            ("L", long_trips),
        )
    }
    duration, levels, month_effect = fit_duration(trips, borough_of, len(boroughs))
    months = sorted(df["month"].unique())
    anchors = {}
    for month in months:
        sel = (df["month"] == month).to_numpy()
        month_trips = df[sel]
        month_clean = clean[sel]
        stats = anchor_stats(month_trips, month_clean, levels, month)
        stats["fares"] = fare_tables(month_trips, month_clean, borough_of)
        anchors[month] = stats
    lt = long_trips[long_trips["segment"] == "S"]
    calibration = {
        "about": "Aggregate statistics of real NYC TLC Green Taxi months for core/sources/synthetic.py; "
        "written by scripts/calibrate_synthetic.py. No trip records.",
        "source_months": months,
        "quantile_levels": {"fine": FINE_LEVELS, "coarse": COARSE_LEVELS, "junk": JUNK_LEVELS},
        "boroughs": boroughs,
        "zone_borough": borough_of[1:].tolist(),
        "segments": segments,
        "duration": duration,
        "anchors": anchors,
        "time": calendar_tables(trips, month_effect, df),
        "junk": junk_tables(df),
        # The long-trip mix as observed (for reference; the regime shift amplifies it).
        "long_trip_observed": {
            "vendor1": float((lt["VendorID"] == 1).mean()),
            "passenger_count": _shares(lt["passenger_count"]),
            "dispatch_share": float((lt["trip_type"] == 2).mean()),
        },
    }
    text = json.dumps(_round(calibration), separators=(",", ":"), sort_keys=True) + "\n"
    write_text(text, dest)
    print(
        f"wrote {dest}: {len(text) / 1024:.0f} KB from {len(months)} months ({len(df)} trips, "
        f"{len(trips)} clean); duration residual RMSE (log) {duration['residual_rmse_pooled']:.3f} pooled, "
        f"{duration['residual_rmse_within_month']:.3f} within months"
    )
    for seg, tables in segments.items():
        pu_share = {zone: share for zone, share in tables["pu"]}
        covered = sum(pu_share[p[0]] * p[2] for p in tables["pairs"])
        print(
            f"  segment {seg}: {tables['rows']} trips, {len(tables['pairs'])} zone pairs cover {covered:.0%}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
