"""The interactive API docs (Swagger UI at /docs) served from this machine.

FastAPI's default page loads Swagger UI from a public CDN, so behind a firewall or offline it is
blank. This is FastAPI's documented self-hosted docs page instead: the same page, with its script,
styles and favicon read from the files the ``fastapi-offline`` package ships (swagger-ui's dist,
kept current with its npm releases), so the image and a laptop without internet both show working
docs.

No ReDoc page: ReDoc 2 always fetches its "API docs by Redocly" logo from cdn.redoc.ly (there is no
option to turn it off), so even self-hosted it reaches out on every visit. /openapi.json feeds any
other viewer.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
FAVICON = "favicon.png"


def add_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve the docs page and its assets; ``app`` must be built with docs_url=None, redoc_url=None
    (otherwise FastAPI has already routed its CDN pages)."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None: serve.docs serves them")
    missing = [name for name in (SWAGGER_JS, SWAGGER_CSS, FAVICON) if not (ASSETS_DIR / name).is_file()]
    if missing:
        # A broken install would otherwise only show up as a blank page in someone's browser.
        raise RuntimeError(
            f"fastapi-offline's docs assets are missing from {ASSETS_DIR}: {', '.join(missing)}"
        )
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    def asset(request: Request, name: str) -> str:
        # root_path: behind a proxy that mounts the service under a prefix, links must carry it.
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, SWAGGER_JS),
            swagger_css_url=asset(request, SWAGGER_CSS),
            swagger_favicon_url=asset(request, FAVICON),
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if oauth2_redirect_url:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()
