"""Routes of the page and of the docs. Nothing they serve comes from a CDN: the page is plain HTML, CSS and
JavaScript modules in `static/`, and Swagger UI and ReDoc are the copies the `fastapi-offline` package ships
(MIT, with their own licences), so both work on a machine with no internet."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..middleware import PUBLIC_PREFIX

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = Path(fastapi_offline.__file__).resolve().parent / "static"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Only the server itself may be reached: no CDN, no fonts, no beacons. ReDoc's sidebar links a logo on its
# CDN, which this keeps the browser from fetching. The page needs blob: and data: for the photos it shows.
_BASE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PAGE_POLICY = f"{_BASE_POLICY}; script-src 'self'; style-src 'self'"
# Swagger UI starts from an inline script; both docs inject styles, and ReDoc searches in a blob: worker.
DOCS_POLICY = f"{_BASE_POLICY}; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; worker-src blob:"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    # Revalidated on every load, so a new release's page never runs against cached old modules.
    return FileResponse(
        STATIC / "index.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return _confined(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="mobilenet-serve: API",
            swagger_js_url=f"{PUBLIC_PREFIX}vendor/swagger-ui-bundle.js",
            swagger_css_url=f"{PUBLIC_PREFIX}vendor/swagger-ui.css",
            swagger_favicon_url=f"{PUBLIC_PREFIX}favicon.svg",
            oauth2_redirect_url=OAUTH2_REDIRECT,
            # No validator badge: Swagger UI would send the spec to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return _confined(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return _confined(
        get_redoc_html(
            openapi_url="/openapi.json",
            title="mobilenet-serve: API",
            redoc_js_url=f"{PUBLIC_PREFIX}vendor/redoc.standalone.js",
            redoc_favicon_url=f"{PUBLIC_PREFIX}favicon.svg",
            with_google_fonts=False,
        )
    )


def _confined(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response


def install(app: FastAPI) -> None:
    """The page's and the docs' routes, and their static files (the vendored docs' first: theirs is the deeper path)."""
    app.include_router(router)
    app.mount(f"{PUBLIC_PREFIX}vendor", StaticFiles(directory=VENDOR), name="docs-assets")
    app.mount(PUBLIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="page-assets")
