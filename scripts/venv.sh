# Sourced by run.sh and test.sh: create .venv if needed, install the pinned dependencies, activate it.
# Reinstalls only when pyproject.toml or constraints.txt change (a stamp holds their hash).
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: Auto-Ops needs Python 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv || {
        echo "error: could not create a virtual environment; on Debian: sudo apt-get install python3.11-venv" >&2
        exit 1
    }
fi
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo ">> installing pinned dependencies into .venv (first run: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# Offline by default: no usage pings from DVC, MLflow or Evidently.
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 EVIDENTLY_DISABLE_TELEMETRY=1
