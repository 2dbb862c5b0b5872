#!/usr/bin/env bash
# Run the linter and the whole test suite (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ruff check .
# Two pytest-xdist workers on the 2-core CI machine, each taking a whole test file at a time (module
# fixtures and test_loop_e2e's ordered phases stay in one process; tests/conftest.py starts the slow
# files first). AUTOOPS_TEST_WORKERS=0 runs everything in this one process.
python -m pytest -n "${AUTOOPS_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
