#!/usr/bin/env bash
# Run the linter and the whole test suite (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ruff check .
python -m pytest "$@"
