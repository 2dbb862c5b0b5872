"""The FastAPI application: ``create_app()`` assembles it from :class:`serve.settings.Settings`.

Run it with ``python -m serve`` (uvicorn, one worker per core). ``create_app`` only assembles: the
running service (serve/service.py: model holder, metrics, prediction log) kept as
``app.state.service`` and started and stopped by the lifespan, the docs pages (serve/docs.py), the
API's routes (serve/routes.py: the endpoints), the exception handlers, and the middleware (request
metrics, and the body size limit defined here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.docs import add_docs
from serve.metrics import MetricsMiddleware
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


class BodyLimitMiddleware:
    """413 for a body beyond any valid request, on every route, without reading it past the limit.

    With a Content-Length the answer comes before any of the body is read. Without one (chunked
    transfer) the body is counted as it streams in and reading stops at the limit: otherwise a
    large chunked body is buffered and parsed in full (seconds, and gigabytes of memory) before
    it could be refused. The rest of such a body is discarded by uvicorn as it arrives, and the
    connection stays usable, so the client reads the 413 rather than a reset.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = json_response({"detail": f"request body over {self.max_bytes} bytes"}, 413)
                await response(scope, receive, send)
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
            "Features are computed by the pipeline's own `stages/features.py`."
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
    app.add_exception_handler(Exception, unexpected_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_batch * BYTES_PER_TRIP + 65536)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    complete_openapi(app, settings.max_batch)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    await service.start()
    yield
    service.stop()


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own 422 shape, minus the echoed input (it can be a whole batch).
    errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
