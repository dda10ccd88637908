"""Serves the dashboard page and its assets."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
_STATIC = files("a2z.server.web") / "static"
_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


@router.get("/")
def index() -> HTMLResponse:
    """The dashboard shell; it logs in and reads records through the API."""
    return HTMLResponse((_STATIC / "index.html").read_text(), headers=_SECURITY_HEADERS)


@router.get("/static/{name}")
def asset(name: str) -> Response:
    """One of the page's fixed assets (no path walking: only known names are served)."""
    if name not in _TYPES:
        return Response(status_code=404)
    return Response((_STATIC / name).read_bytes(), media_type=_TYPES[name])


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
