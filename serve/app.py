"""The FastAPI application: ``create_app()`` assembles it from :class:`serve.settings.Settings`.

Run it with ``python -m serve`` (uvicorn, one worker per core). ``create_app`` only assembles: the
running service (serve/service.py: model holder, metrics, prediction log) kept as
``app.state.service`` and started and stopped by the lifespan, the docs pages (serve/docs.py), the
API's routes (serve/routes.py: the endpoints), the exception handlers, and the middleware (request
metrics, and the request checks defined here). The connection-level limits (head size,
deadlines, connection cap) are uvicorn's protocol's: serve/http_protocol.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.docs import add_docs
from serve.http_protocol import BODY_TIMED_OUT, METRICS_STATE
from serve.metrics import MetricsMiddleware
from serve.one_trip_route import PATH as ONE_TRIP_PATH
from serve.one_trip_route import OneTripFastPath
from serve.routes import add_api_routes, complete_openapi, json_response
from serve.service import Service
from serve.settings import Settings

# A trip is ~300 bytes of JSON; anything far beyond max_batch trips is refused before it is read.
BYTES_PER_TRIP = 1024

log = logging.getLogger("serve")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body has streamed in past the limit.

    An HTTPException so that whoever is reading the body (our endpoints, or FastAPI for a route
    with body parameters, which turns other errors into a 400) answers 413 with it.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body over {max_bytes} bytes")


class RequestChecksMiddleware:
    """What a request's headers already decide, in one pass over them, before any body is read.

    - **413** for a body beyond any valid request, on every route, without reading it past the
      limit. With a Content-Length the answer comes before any of the body is read. Without one
      (chunked transfer) the body is counted as it streams in and reading stops at the limit:
      otherwise a large chunked body is buffered and parsed in full (seconds, and gigabytes of
      memory) before it could be refused. The rest of such a body is discarded by uvicorn as it
      arrives, and the connection stays usable, so the client reads the 413 rather than a reset.
    - **415** for a POST body that is not ``application/json``: a ``text/plain`` (or form) POST
      needs no CORS preflight, so without this any web page a user visits could write into the
      prediction log the drift check reads. One exception, for the original API's documented
      ``curl -d`` requests: curl's default ``application/x-www-form-urlencoded`` is read as JSON
      when the request has no ``Origin`` header - browsers send one with every cross-site POST,
      curl and HTTP libraries do not.
    - **415** for a ``Content-Encoding`` (gzip, br, ...): none is supported, and a compressed body
      read as plain bytes would only be "Invalid JSON" (or worse, accepted as such).
    - **HEAD** wherever GET is served (load balancers' health checks use it; FastAPI routes GET
      only): the application answers the request as a GET, and uvicorn, which still sees HEAD in
      its own scope, sends the status and headers without the body.

    One middleware, not one per check: each ASGI layer costs every request a little.

    Starlette and FastAPI offer none of these for a route that reads its body itself.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        refusal = self._refusal(scope)
        if refusal is LENGTH_GIVEN:
            # Within the limit (else refused): httptools reads no more than the length given.
            await self.app(scope, receive, send)
            return
        if refusal is not None:
            await json_response({"detail": refusal[1]}, refusal[0])(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The refusal the headers decide, or None - or LENGTH_GIVEN, for a request that passes
        and gives its body's length (the common case: nothing to count as it streams in)."""
        content_type = encoding = None
        has_body = has_origin = has_length = chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    return 413, f"request body over {self.max_bytes} bytes"
                has_body = value != b"0"
                has_length = value.isdigit()
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                has_body = True
                chunked = True
            elif name == b"content-encoding":
                encoding = value
            elif name == b"origin":
                has_origin = True
        if encoding is not None and encoding.strip().lower() != b"identity":
            return (
                415,
                f"Content-Encoding {encoding.decode('latin-1')} is not supported: send the body uncompressed",
            )
        passes = LENGTH_GIVEN if has_length and not chunked else None
        if scope["method"] != "POST" or not has_body:
            return passes
        media_type = (content_type or b"").partition(b";")[0].strip().lower()
        if media_type == b"application/json" or (media_type == FORM and not has_origin):
            return passes
        given = f"Content-Type {content_type.decode('latin-1')}" if content_type else "no Content-Type"
        return 415, f"the body must be JSON, sent as Content-Type: application/json ({given} given)"


# RequestChecksMiddleware._refusal's verdict for a request that passes with a Content-Length.
LENGTH_GIVEN = (0, "")
# curl -d's default Content-Type (see RequestChecksMiddleware).
FORM = b"application/x-www-form-urlencoded"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    # One thread per worker for anything OpenMP (the sklearn fallback): workers scale across cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    service = Service(settings)
    app = FastAPI(
        title="Auto-Ops: NYC Green Taxi trip duration",
        version="1",
        description=(
            "Predicts a Green Taxi trip's duration in minutes from what a dispatcher knows at pickup. "
            f"`/predict_batch` takes at most **{settings.max_batch}** trips (413 beyond). "
            "Features are computed by the pipeline's own `core/features.py`."
        ),
        lifespan=lifespan,
        # serve.docs serves /docs from local files (FastAPI's pages load a CDN); no ReDoc, see there.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    add_docs(app)
    # Onto the app's own APIRouter: FastAPI 0.165 dispatches an included APIRouter lazily, through
    # more matching per request (measured: ~10 us more per request, more than a compiled prediction).
    add_api_routes(app.router, settings.max_batch)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(Exception, unexpected_error)
    # Innermost: the checks and the metrics apply to the fast path's requests too.
    one_trip = next(r for r in app.router.routes if getattr(r, "path", None) == ONE_TRIP_PATH)
    app.add_middleware(OneTripFastPath, service=service, route=one_trip)
    app.add_middleware(RequestChecksMiddleware, max_bytes=settings.max_batch * BYTES_PER_TRIP + 65536)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    complete_openapi(app, settings.max_batch)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    service: Service = app.state.service
    await service.start()
    # The lifespan state reaches uvicorn's protocol too (serve/http_protocol.py), which counts what
    # it refuses before the application sees a request.
    yield {METRICS_STATE: service.metrics}
    service.stop()


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    # FastAPI's own 422 shape, minus the echoed input (it can be a whole batch); with how many
    # errors were left out when there were more than max_errors.
    errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
    answer: dict[str, Any] = {"detail": errors}
    if omitted := getattr(exc, "omitted", 0):
        answer["errors_omitted"] = omitted
    return json_response(answer, 422)


async def client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
    """The client went away (or its body missed the deadline) while its body was being read: one
    line at info level, counted as 499 (nginx's "client closed request") or 408, never a 5xx. The
    answer goes nowhere (uvicorn drops it); the metrics middleware counts its status."""
    timed_out = request.scope.get(BODY_TIMED_OUT, False)
    client = f"{request.client.host}:{request.client.port} " if request.client else ""
    if timed_out:
        log.info("%s408: %s %s: request body not received in time", client, request.method, request.url.path)
    else:
        log.info("%sclient disconnected during %s %s", client, request.method, request.url.path)
    return Response(status_code=408 if timed_out else CLIENT_CLOSED)


# nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED = 499


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
