"""The web page (``/``), its icon, and ``/reference``: the API reference that works offline.

``/docs`` and ``/redoc`` (FastAPI's Swagger UI and ReDoc, which load their scripts and fonts
from a CDN) are not served; they redirect to ``/reference``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/reference")
def reference(request: Request):
    from kinemate.service.apidoc import REFERENCE_CSP, render_reference

    app = request.app
    if getattr(app.state, "reference_page", None) is None:
        app.state.reference_page = render_reference(app.openapi())
    return Response(app.state.reference_page, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": REFERENCE_CSP, "X-Frame-Options": "DENY"})


@router.get("/docs")
@router.get("/redoc")
def api_docs():
    return RedirectResponse("/reference", status_code=308)


@router.get("/favicon.ico")
def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")
