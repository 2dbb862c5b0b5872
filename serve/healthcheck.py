"""``python -m serve.healthcheck``: exit 0 when the local service is up and has a model (the image's
HEALTHCHECK; the runtime image has no curl, and this needs nothing beyond the standard library)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> None:
    port = os.environ.get("AUTOOPS_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            health = json.load(response)
    except (OSError, ValueError) as exc:
        sys.exit(f"unhealthy: {exc}")
    if not health.get("model_loaded"):
        sys.exit("unhealthy: no model loaded")


if __name__ == "__main__":
    main()
