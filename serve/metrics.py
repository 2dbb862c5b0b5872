"""Prometheus metrics: requests and latency per endpoint, predictions served, the model version.

With several uvicorn workers each one is its own process, so prometheus_client's multiprocess
mode is used (``PROMETHEUS_MULTIPROC_DIR``, set up by ``python -m serve``): every worker writes its
samples to files there and ``/metrics``, whichever worker answers it, reports the sum over all.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.model_store import ServedModel

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Fine at the low end: a compiled prediction answers in well under a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServiceMetrics:
    def __init__(self) -> None:
        # Our own registry (not the global one), so several apps can live in one process (tests).
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "autoops_http_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=reg
        )
        self.latency = Histogram(
            "autoops_http_request_duration_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "autoops_predictions",
            "Trips predicted (a batch counts each trip)",
            ["model_version"],
            registry=reg,
        )
        self._predictions_by_version: dict[str, Any] = {}
        # 1 for the version a worker serves; "max" across workers: 1 while any worker serves it.
        self.model_info = Gauge(
            "autoops_model_info",
            "The model being served (value 1), by name, version and predictor",
            ["name", "version", "predictor"],
            multiprocess_mode="max",
            registry=reg,
        )
        self.model_swaps = Counter(
            "autoops_model_swaps", "Models swapped in (including the first)", registry=reg
        )
        self.model_load_failures = Counter(
            "autoops_model_load_failures", "Failed attempts to load a new model", registry=reg
        )
        self.log_rows = Counter(
            "autoops_prediction_log_rows",
            "Prediction log rows, by outcome (written, dropped)",
            ["outcome"],
            registry=reg,
        )
        # "livemin" across workers: 0 as soon as one live worker cannot write to its log sink.
        self.log_up = Gauge(
            "autoops_prediction_log_up",
            "1 while the prediction log sink accepts writes (0: down; rows wait, bounded, in memory)",
            multiprocess_mode="livemin",
            registry=reg,
        )
        # Below the application: what the connection limits refused (serve/http_protocol.py).
        self.refused = Counter(
            "autoops_http_refused",
            "Connections closed by a limit before the application saw their request, by reason",
            ["reason"],
            registry=reg,
        )
        if not multiprocess_mode():
            ProcessCollector(registry=reg)

    def counted(self, model_version: str) -> Any:
        """The predictions counter of ``model_version``: ``predictions.labels(...)``, looked up once
        per version (the lookup costs as much as the count itself, every request)."""
        child = self._predictions_by_version.get(model_version)
        if child is None:
            child = self._predictions_by_version[model_version] = self.predictions.labels(model_version)
        return child

    def model_swapped(self, previous: ServedModel | None, served: ServedModel) -> None:
        if previous is not None:
            self.model_info.labels(previous.name, previous.version, previous.predictor.kind).set(0)
        self.model_info.labels(served.name, served.version, served.predictor.kind).set(1)
        self.model_swaps.inc()

    def model_load_failed(self, exc: Exception) -> None:
        self.model_load_failures.inc()

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would cost more per request than the compiled prediction itself)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled series looked up once each (a lookup costs as much as the count): the label
        # values are the routes' templates, methods and statuses, as bounded as the series themselves.
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route: Any = scope.get("route")
            # The route's template, never the raw path: label values must stay a small, fixed set.
            endpoint = getattr(route, "path", UNMATCHED)
            key = (endpoint, scope["method"], status)
            if (requests := self._requests.get(key)) is None:
                requests = self._requests[key] = self.metrics.requests.labels(endpoint, key[1], str(status))
            if (latency := self._latency.get(endpoint)) is None:
                latency = self._latency[endpoint] = self.metrics.latency.labels(endpoint)
            requests.inc()
            latency.observe(time.perf_counter() - started)
