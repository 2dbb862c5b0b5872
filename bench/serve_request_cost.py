"""In-process cost of one request through the whole app (middleware, body checks, validation,
features, compiled trees, metrics, prediction log), without HTTP: a quick before/after for changes
to the request path, far cheaper than bench/serve_bench.py.

    python -m bench.serve_request_cost --label after   # -> bench/results/serve_request_cost.json
    # /predict's single trip before and after issue 21's one-trip route, step by step and layer by layer:
    python -m bench.serve_request_cost --label single-after --out bench/results/single_trip_cost.json
    # the code before a change, from an export of its commit (git archive <commit> | tar -x -C /tmp/x):
    PYTHONPATH=/tmp/x python bench/serve_request_cost.py --label before --commit <commit>

Each label is one entry of the results file: best, median and p90 over rounds of the per-request
CPU microseconds of the event loop's thread (the prediction log's writer thread excluded), for a
single trip and for a 1000-trip batch, so a run before a change and one after sit side by side;
and ``single_trip_steps_us``: where a single trip's time goes, each step of /predict timed alone
(the request's total less the steps it takes is HTTP/ASGI, routing, middleware and body read);
``single_trip_layers``: /predict entered at each layer of the app's middleware stack, so the
difference of two neighbours is what one layer costs.
Measure on a quiet machine (load < 1.5), or alternate before and after runs and compare.

``batch_paths``: /predict_batch's columnar path (serve/batch_columns.py) against pydantic's
per-trip path, in the same run - the whole request and the body's decoding and validation alone,
the two paths in alternate rounds (the per-trip one by making the columnar path decline every
body, as it does a body it does not take), and the ratio of their medians. bench/README.md's
block shows it (``--render`` redraws the block from the results file alone).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from bench.readme_block import fill_block
from core.features import feature_matrix
from core.model import MODEL_FILE, load_model
from serve.app import create_app
from serve.model_store import DirSource
from serve.predictor import compile_model, find_compiler
from serve.request_body import _refuse_duplicates
from serve.request_models import Trip
from serve.routes import json_response
from serve.service import Service
from serve.settings import Settings
from serve.testing import features_with_target, random_trips, train_model_dir
from serve.trip_columns import locate_trips, trip_columns

RESULTS = Path(__file__).parent / "results" / "serve_request_cost.json"
README = Path(__file__).parent / "README.md"
BEGIN = "<!-- serve-request-cost:begin (python -m bench.serve_request_cost --render) -->"
END = "<!-- serve-request-cost:end -->"


def _trips(n: int) -> list[dict[str, Any]]:
    frame = random_trips(n, seed=5)
    return [
        {
            "pu_location_id": int(row.PULocationID),
            "do_location_id": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "pickup_datetime": row.lpep_pickup_datetime.isoformat(),
            "vendor_id": int(row.VendorID),
        }
        for row in frame.itertuples(index=False)
    ]


async def _call(app: Any, path: str, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _measure(app: Any, path: str, body: bytes, rounds: int, per_round: int) -> dict[str, float]:
    assert await _call(app, path, body) == 200
    times = []
    for _ in range(rounds):
        # CPU time of this thread (the event loop's): what the request path costs, far less
        # disturbed than wall-clock time by other processes on a shared machine.
        started = time.thread_time()
        for _ in range(per_round):
            await _call(app, path, body)
        times.append((time.thread_time() - started) / per_round * 1e6)
    return {
        # The best round is the least disturbed by other work on a shared machine.
        "best_us": round(min(times), 1),
        "median_us": round(statistics.median(times), 1),
        "p90_us": round(sorted(times)[int(0.9 * rounds)], 1),
    }


def _time_us(step: Callable[[], Any], rounds: int = 30, per_round: int = 300) -> float:
    """Best-round CPU microseconds of one call of ``step`` (least disturbed on a shared machine)."""
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(per_round):
            step()
        times.append((time.thread_time() - started) / per_round * 1e6)
    return round(min(times), 2)


def _single_trip_steps(service: Service, body: bytes) -> dict[str, float]:
    """Best-round CPU microseconds of each step /predict takes for one trip (serve/routes.py's
    predict_one, step by step, on the app's own service; both the general path, which batches
    take, and the single-trip fast path); the request's total less the steps it takes is HTTP/ASGI,
    FastAPI's routing, the middleware (size limit, content type, metrics timing) and the body read."""
    bodies = service.bodies
    trip = bodies.trip(body)
    located = locate_trips([trip])
    served = service.served_model()
    columns = trip_columns([trip], located)
    features = feature_matrix(columns)
    predictions = served.predictor.predict(features)
    counter = service.metrics.predictions.labels(served.version)
    answer = {"duration_min": float(predictions[0]), "model_version": served.version}
    log = service.prediction_log
    assert log is not None
    steps = {
        "validate: field bound": lambda: bodies._bound_fields(body, bodies._most_colons_one),
        "validate: pydantic": lambda: Trip.model_validate_json(body),
        "validate: duplicate keys": lambda: _refuse_duplicates(body, len(trip.model_fields_set), None),
        "locate (coordinates -> zones)": lambda: locate_trips([trip]),
        "general path: trip -> columns": lambda: trip_columns([trip], located),
        "general path: features": lambda: feature_matrix(columns),
        "general path: predict (compiled trees)": lambda: served.predictor.predict(features),
        "prediction log: queue": lambda: log.append(features, predictions, served.version),
        "metrics: predictions counter": lambda: counter.inc(1),
        # ServiceMetrics.counted, where it exists: the labelled counter looked up once per version.
        "metrics: counter lookup": lambda: getattr(
            service.metrics, "counted", service.metrics.predictions.labels
        )(served.version),
        "response JSON": lambda: json_response(answer),
    }
    try:
        # Imported here: the code measured may predate the fast path (--commit), then it is absent.
        from serve.one_trip import feature_row
    except ImportError:  # code from before the fast path (measured with --commit): general path only
        pass
    else:
        row = feature_row(trip, located)
        steps["fast path: features (serve/one_trip.py)"] = lambda: feature_row(trip, located)
        steps["fast path: predict_row (compiled trees)"] = lambda: served.predictor.predict_row(row)
        steps["fast path: log queue, one row"] = lambda: log.append([row], [1.0], served.version)
    one_trip = getattr(service, "one_trip", None)
    if one_trip is not None:  # the msgspec decoder (serve/one_trip_decoder.py), where it exists
        steps["one-trip route: decode + checks + features"] = lambda: one_trip.row(body)
        steps["one-trip route: whole answer (Service.answer_one)"] = lambda: service.answer_one(body)
    return {name: _time_us(step) for name, step in steps.items()}


async def _single_trip_layers(app: Any, body: bytes) -> dict[str, dict[str, float]]:
    """/predict entered at each ASGI layer of the app's middleware stack, outermost first (down to
    FastAPI's exception middleware: the router below needs its exit stack): what each layer and
    everything under it costs; the difference of two neighbours is one layer's own cost."""
    layers: dict[str, dict[str, float]] = {}
    layer = app.middleware_stack
    while layer is not None and type(layer).__name__ != "AsyncExitStackMiddleware":

        async def entered(scope: Any, receive: Any, send: Any, layer: Any = layer) -> None:
            scope["app"] = app
            await layer(scope, receive, send)

        layers[type(layer).__name__] = await _measure(entered, "/predict", body, rounds=20, per_round=300)
        layer = getattr(layer, "app", None)
    return layers


class _Declining:
    """A columnar path that declines every body: pydantic's per-trip path alone."""

    def decode(self, body: bytes, bare: bool) -> None:
        return None


async def _batch_paths(app: Any, body: bytes, rounds: int = 30) -> dict[str, Any] | None:
    """/predict_batch with the columnar path and without it, rounds alternated so both see the same
    machine; and the body's decoding + validation alone (``BodyReader.trips``) both ways."""
    bodies = app.state.service.bodies
    columnar = getattr(bodies, "_columnar", None)
    if columnar is None:  # code from before the columnar path (measured with --commit)
        return None
    paths = {"columnar": columnar, "per_trip": _Declining()}
    request: dict[str, list[float]] = {name: [] for name in paths}
    decode: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            bodies._columnar = path
            timed = await _measure(app, "/predict_batch", body, rounds=1, per_round=5)
            request[name].append(timed["best_us"])
            decode[name].append(_time_us(lambda: bodies.trips(body), rounds=1, per_round=5))
    bodies._columnar = columnar

    def summary(times: dict[str, list[float]]) -> dict[str, Any]:
        medians = {name: round(statistics.median(t), 1) for name, t in times.items()}
        return {
            **{f"{name}_median_us": medians[name] for name in paths},
            **{f"{name}_best_us": round(min(t), 1) for name, t in times.items()},
            "per_trip_to_columnar": round(medians["per_trip"] / medians["columnar"], 2),
        }

    return {
        "trips": 1000,
        "rounds": rounds,
        "request": summary(request),
        "decode_and_validate": summary(decode),
    }


def render_block(results: dict[str, Any]) -> str:
    """The README block: each run that measured both batch paths, in the results file's order."""
    lines = [
        BEGIN,
        "| run | commit | load | 1000-trip request, columnar (us) | per-trip (us) | ratio "
        "| decode + validate, columnar (us) | per-trip (us) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in results.items():
        if not run.get("batch_paths"):
            continue
        request, decode = run["batch_paths"]["request"], run["batch_paths"]["decode_and_validate"]
        lines.append(
            f"| {label} | {run['commit']} | {run['load_at_start']} "
            f"| {request['columnar_median_us']} | {request['per_trip_median_us']} "
            f"| {request['per_trip_to_columnar']}x "
            f"| {decode['columnar_median_us']} | {decode['per_trip_median_us']} "
            f"| {decode['per_trip_to_columnar']}x |"
        )
    return "\n".join(lines) + "\n" + END


def render() -> str:
    """bench/README.md with the block drawn from the results file."""
    return fill_block(README, BEGIN, END, render_block(json.loads(RESULTS.read_text())))


def _empty_endpoint() -> Any:
    # By file: the code measured may come from another tree (--commit), the ceiling from this one.
    path = Path(__file__).parent / "empty_endpoint.py"
    spec = importlib.util.spec_from_file_location("empty_endpoint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


async def _run(work: Path) -> dict[str, Any]:
    frame = features_with_target(random_trips(2000, seed=3))
    models = train_model_dir(work, frame.iloc[:1600], frame.iloc[1600:], max_iter=10)
    cache = work / "compiled"
    card = DirSource(models).resolve().card
    estimator = load_model(models / MODEL_FILE, sha256=card.model_sha256)
    if find_compiler() is None or compile_model(estimator, DirSource(models).fingerprint(), cache) is None:
        raise SystemExit("a C compiler is needed: the point is the request path around the compiled trees")
    settings = Settings(
        models_dir=models,
        compiled_cache=cache,
        watch_interval_s=0,
        prediction_log=work / "log.sqlite",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert app.state.service.holder.current.predictor.kind == "compiled"
        one = orjson.dumps(_trips(1)[0])
        batch = orjson.dumps({"trips": _trips(1000)})
        return {
            "single_trip": await _measure(app, "/predict", one, rounds=30, per_round=300),
            # The floor: the same call into an app that only parses the body (bench/empty_endpoint.py).
            "empty_endpoint_single_trip": await _measure(
                _empty_endpoint(), "/predict", one, rounds=30, per_round=300
            ),
            "single_trip_steps_us": _single_trip_steps(app.state.service, one),
            "single_trip_layers": await _single_trip_layers(app, one),
            "batch_1000": await _measure(app, "/predict_batch", batch, rounds=30, per_round=5),
            "batch_paths": await _batch_paths(app, batch),
        }


def main(
    label: Annotated[str | None, typer.Option(help="name of this run in the results file")] = None,
    commit: Annotated[
        str | None, typer.Option(help="the measured code's commit (default: HEAD here)")
    ] = None,
    render_only: Annotated[
        bool, typer.Option("--render", help="only redraw bench/README.md's block from the results file")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="results file (bench/README.md's block is drawn from the default one only)")
    ] = RESULTS,
) -> None:
    if not render_only:
        if label is None:
            raise typer.BadParameter("--label names the run (or --render to redraw the block only)")
        _measure_run(label, commit, out)
    if out == RESULTS and README.exists() and BEGIN in README.read_text():
        README.write_text(render())


def _measure_run(label: str, commit: str | None, out: Path) -> None:
    load = float(Path("/proc/loadavg").read_text().split()[0])
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_run(Path(tmp)))
    commit = (
        commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    result.update({"commit": commit, "load_at_start": load})
    results = json.loads(out.read_text()) if out.exists() else {}
    results[label] = result
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({label: result}, indent=2))


if __name__ == "__main__":
    typer.run(main)
