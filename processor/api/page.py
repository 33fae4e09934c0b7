"""GET /, /docs, /redoc and /static: the cost overview page and the API's own docs, offline.

Every asset is served from processor/static (the vendored packages are pinned and checked by
processor/static/vendor/manifest.json), so an admin host without internet sees them all. These
routes are open even with API tokens set: they carry no data; the page asks for a read token and
sends it with its API calls (docs/page.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC", "install"]

STATIC: Final = Path(__file__).resolve().parents[1] / "static"
_VENDOR: Final = "/static/vendor"
_FAVICON: Final = "/static/favicon.svg"


def install(app: FastAPI) -> None:
    """Serve the page, its assets, and /docs + /redoc from local assets (no CDN)."""
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    # One router per app: tests build several apps in one process.
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def get_page() -> FileResponse:
        """The cost overview: cost by model and tenant, the GPU fleet, pipeline health."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @router.get("/docs")
    def get_swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{_VENDOR}/swagger-ui-dist/swagger-ui-bundle.js",
            swagger_css_url=f"{_VENDOR}/swagger-ui-dist/swagger-ui.css",
            swagger_favicon_url=_FAVICON,
            # Swagger UI's default validator badge is an image from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/redoc")
    def get_redoc() -> HTMLResponse:
        redoc_js = f"{_VENDOR}/redoc/redoc.standalone.js"
        template = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=redoc_js,
            redoc_favicon_url=_FAVICON,
            with_google_fonts=False,  # fonts.googleapis.com is a CDN too
        )
        html = bytes(template.body).decode()
        # Redoc's footer logo is a hard-coded CDN URL; redoc-offline.js swaps it first
        # (tests/unit/test_page.py fails if FastAPI's template stops matching).
        script = f'<script src="{redoc_js}">'
        html = html.replace(script, f'<script src="/static/redoc-offline.js"></script>\n{script}')
        return HTMLResponse(html)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
