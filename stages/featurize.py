"""Stage 2, featurize: target, filters and features for the training window and the current month.

The work is core/feature_tables.py's (features from core/features.py, the same code the service
runs); this entry point reads params.yaml and writes data/features/{train,holdout,current}.parquet
(see dvc.yaml's `featurize`).
"""

from __future__ import annotations

from pathlib import Path

from core.feature_tables import write_feature_tables
from core.io import atomic_dir
from core.params import Params, load_params
from core.paths import FEATURES_DIR, RAW_DIR
from core.runner import run_stage


def featurize(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = FEATURES_DIR) -> None:
    # The three tables appear together or not at all: a failed month leaves the old ones.
    with atomic_dir(out_dir) as tmp:
        write_feature_tables(params, raw_dir, tmp)


def main() -> None:
    featurize(load_params())


if __name__ == "__main__":
    run_stage("featurize", main)
