"""How many training rows the model needs: RMSE against a deterministic sample's size, on real months.

Green Taxi months hold 50-80k trips, so the pool is several real months of one era (2023-01 to
2024-04, about 390k trips) and the test is a later month (2024-07). Each size is the same
deterministic sample ``train`` takes (:func:`core.training.sample_positions`), fitted with the
default model on one thread.

    python -m bench.sample_size [--tlc-dir ../shared/data/tlc]

Writes bench/results/sample_size.json; bench/scale.py renders it into bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from core.features import FEATURES, TARGET, duration_minutes, feature_frame, filter_mask
from core.metrics import regression_metrics
from core.model import build_model, predict
from core.months import month_bounds
from core.params import load_params
from core.schema import normalize
from core.training import sample_positions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sample_size.json"
POOL = ["2023-01", "2023-02", "2023-12", "2024-01", "2024-03", "2024-04"]
TEST = "2024-07"
SIZES = [10_000, 25_000, 50_000, 100_000, 200_000, 400_000]


def features(month: str, tlc_dir: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    trips = normalize(pq.read_table(tlc_dir / f"green_tripdata_{month}.parquet"), month).to_pandas()
    start, end = month_bounds(month)
    trips = trips[filter_mask(trips, start, end, load_params(ROOT / "params.yaml").filters)]
    frame = feature_frame(trips)
    frame[TARGET] = duration_minutes(trips).to_numpy()
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tlc-dir", type=Path, default=ROOT.parent / "shared" / "data" / "tlc")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml").train
    pool = pd.concat([features(m, args.tlc_dir) for m in POOL], ignore_index=True)
    test = features(TEST, args.tlc_dir)
    x_test, y_test = test[list(FEATURES)].to_numpy(), test[TARGET].to_numpy()
    rows = []
    for size in [s for s in SIZES if s < len(pool)] + [len(pool)]:
        positions = sample_positions(len(pool), size, params.seed)
        sample = pool if positions is None else pool.iloc[positions]
        model = build_model(params)
        started = time.perf_counter()
        with threadpool_limits(limits=1, user_api="openmp"):
            model.fit(sample[list(FEATURES)].to_numpy(), sample[TARGET].to_numpy())
        seconds = time.perf_counter() - started
        metrics = regression_metrics(y_test, predict(model, x_test))
        rows.append(
            {**metrics, "test_rows": metrics["rows"], "rows": len(sample), "fit_seconds": round(seconds, 1)}
        )
        print(rows[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"pool": POOL, "test": TEST, "pool_rows": len(pool), "results": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
