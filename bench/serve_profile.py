"""Where a batch's time goes inside the live server: py-spy samples of its workers, by step.

bench/serve_bench.py calls :func:`profile_server` during an extra batch run under load; each
sample goes to the innermost frame that matches a step of :data:`PROFILE_STEPS`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# Innermost matching frame wins: (category, file part, function names or None for any function).
PROFILE_STEPS: list[tuple[str, str, tuple[str, ...] | None]] = [
    (
        "trees (compiled library)",
        "core/compiled_trees.py",
        ("_predict_batch", "_predict_rows", "_run", "predict"),
    ),
    ("coordinates -> zones", "serve/zones.py", None),
    ("features (core.features)", "core/features.py", None),
    ("trips -> input columns", "serve/trip_columns.py", None),
    ("trips -> input columns", "serve/request_models.py", ("pickup_local",)),
    ("validate JSON body (columnar)", "serve/batch_columns.py", None),
    ("validate JSON body (one-trip route, msgspec)", "serve/one_trip_decoder.py", None),
    ("validate JSON body (pydantic)", "serve/request_models.py", None),  # its validators
    ("validate JSON body (pydantic)", "serve/request_body.py", None),  # and its guards
    ("prediction log: queue", "serve/prediction_log.py", ("append",)),
    ("prediction log: SQLite writer thread", "serve/prediction_log", None),
    ("metrics", "serve/metrics.py", None),
    ("metrics", "prometheus_client", None),
    ("response JSON", "serve/routes.py", ("json_response",)),
    ("request checks (size, type, deadlines)", "serve/app.py", None),
    ("request checks (size, type, deadlines)", "serve/http_protocol.py", None),
    ("request handling (endpoint code)", "serve/routes.py", None),
    ("request handling (endpoint code)", "serve/service.py", None),
    ("request handling (endpoint code)", "serve/one_trip_route.py", None),
]
HTTP_STEP = "HTTP, ASGI and event loop (uvicorn, starlette, fastapi)"


def profile_server(pid: int, seconds: float, out: Path) -> dict[str, float] | None:
    """Share of the server's busy CPU samples per step, from py-spy on the live workers (None
    without py-spy). Non-blocking sampling, so the server runs undisturbed."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not installed: no in-server profile (pip install py-spy)")
        return None
    command = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", "250"]
    command += ["--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(out)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        print(f"py-spy failed ({run.returncode}): {run.stderr[-500:]}")
        return None
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        if (step := classify(stack)) is not None:
            counts[step] = counts.get(step, 0) + int(n)
    total = sum(counts.values())
    return {step: n / total for step, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else None


# Threads waiting, not working (uvicorn's supervisor and its health pipe, idle writer threads):
# py-spy cannot always tell, as they release the GIL in C.
IDLE_FRAMES = ("Connection._recv", "Condition.wait", "Event.wait", "select", "sleep", "_poll", "accept")


def classify(stack: str) -> str | None:
    """The step a py-spy stack ("function (path/file.py:line);...", root first) belongs to."""
    frames = stack.split(";")
    leaf = frames[-1].partition(" (")[0]
    if any(leaf == idle or leaf.endswith("." + idle) for idle in IDLE_FRAMES):
        return None
    for frame in reversed(frames):
        qualified, _, location = frame.partition(" (")
        function = qualified.rsplit(".", 1)[-1]  # methods come as Class.method
        for step, file_part, functions in PROFILE_STEPS:
            if file_part in location and (functions is None or function in functions):
                return step
    return HTTP_STEP
