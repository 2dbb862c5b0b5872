"""How sure is a relative MAE change? A paired bootstrap 95% interval, one definition for everyone.

The trigger's expected gain (core/trigger.py) and the retrain PR's champion-vs-challenger change
(autoops/evidence.py, also per segment) are both ``mean(a) / mean(b) - 1`` over the per-trip
absolute errors of two models on the *same* trips. Resampling the trips, not each model's errors
apart, keeps the pairing: most of a trip's difficulty is shared by both models, so the interval
is the one of the difference they make, much narrower than two separate intervals suggest. A 4.4%
gain on 13,000 trips and one on 800 then read differently.

Cost bound: an exact bootstrap draws ``resamples x trips`` indices, 10 billion for the late quarter
of a 20-million-trip month. Past ``max_units`` trips, the trips are dealt (a seeded shuffle) into
``max_units`` equal-sized groups and the groups are resampled instead. For a ratio of means this
keeps the variance: each group's contribution ``sum(a) - R sum(b)`` has mean zero and a variance
proportional to its size, so resampling groups of ``m`` trips gives the same spread as resampling
trips (tests/test_bootstrap.py checks the widths agree). Memory is two float64 arrays of the
trips (already held by the callers) plus one int64 shuffle; time is ``resamples x max_units``
gathers, a fraction of a second, whatever the month's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RESAMPLES = 2000  # 50 resamples beyond each end (2.5%, 97.5%): the ends barely depend on the seed
CONFIDENCE = 0.95
SEED = 0  # fixed: the same errors always give the same interval (drift.json's bytes must not vary)
MAX_UNITS = 20_000  # exact below this many trips; grouped above (see the module docstring)
_CHUNK = 100  # resamples drawn at once: 100 x 20,000 indices, 16 MB


def paired_change_interval(
    errors: np.ndarray,
    baseline_errors: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    max_units: int = MAX_UNITS,
) -> dict[str, Any] | None:
    """The 95% percentile interval of ``mean(errors) / mean(baseline_errors) - 1``, paired by trip.

    ``errors[i]`` and ``baseline_errors[i]`` are two models' absolute errors on trip ``i``. None
    when there are no trips or the baseline's errors are all zero (no relative change exists).
    """
    a = np.asarray(errors, dtype=np.float64)
    b = np.asarray(baseline_errors, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired errors need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0 or not b.sum() > 0:
        return None
    rng = np.random.default_rng(seed)
    units = min(n, max_units)
    if units < n:
        group = np.empty(n, dtype=np.int64)
        group[rng.permutation(n)] = np.arange(n) % units
        a, b = np.bincount(group, a, units), np.bincount(group, b, units)
    ratios = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        picks = rng.integers(0, units, size=(min(_CHUNK, resamples - start), units))
        ratios[start : start + len(picks)] = a[picks].sum(axis=1) / np.maximum(b[picks].sum(axis=1), 1e-300)
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail]) - 1.0
    return {
        "low": round(float(low), 6),
        "high": round(float(high), 6),
        "confidence": CONFIDENCE,
        "resamples": resamples,
        "trips": n,
        "units": units,
        "seed": seed,
    }


def interval_text(interval: dict[str, Any], *, signed: bool = True) -> str:
    """``95% CI -42.1 to -39.5``: the interval's ends in percent."""
    low, high = (format(interval[k] * 100, "+.1f" if signed else ".1f") for k in ("low", "high"))
    return f"{interval['confidence']:.0%} CI {low} to {high}"


def percent_with_interval(
    value: float, interval: dict[str, Any] | None, *, signed: bool = True, inside: bool = False
) -> str:
    """``-40.8% (95% CI -42.1 to -39.5)``: a relative change and its interval, in percent.

    ``inside``: for text already in brackets, ``-40.8%, 95% CI -42.1 to -39.5``.
    """
    text = format(value, "+.1%" if signed else ".1%")
    if not interval:
        return text
    ci = interval_text(interval, signed=signed)
    return f"{text}, {ci}" if inside else f"{text} ({ci})"
