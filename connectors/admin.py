"""The admin port of an HTTP connector: metrics and API documents, never on the public port.

A public port answers its callers' requests only. Prometheus scrapes `/metrics`, and
operators read `/docs` and `/openapi.json` on an address of their own (127.0.0.1 by
default), so neither the metric names nor the whole API surface are shown to the
internet.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import make_asgi_app


def admin_app(public: FastAPI | None = None) -> FastAPI:
    """Metrics, health, and (given the public app) its OpenAPI document and Swagger UI."""
    admin = FastAPI(title="ledgerstream admin", docs_url=None, redoc_url=None, openapi_url=None)
    admin.mount("/metrics", make_asgi_app())

    @admin.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if public is not None:
        title = public.title

        @admin.get("/openapi.json")
        async def openapi() -> JSONResponse:
            document: dict[str, Any] = public.openapi()
            return JSONResponse(document)

        @admin.get("/docs")
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} (admin)")

    return admin
