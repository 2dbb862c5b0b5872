#!/usr/bin/env bash
# Set everything up and run the whole pipeline (ingest -> featurize -> train -> evaluate -> drift)
# on the embedded synthetic data, offline, then print a short summary.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
autoops repro "$@"
autoops summary
