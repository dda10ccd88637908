"""Errors as RFC 9457 ``application/problem+json``: one handler per error family."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from a2z.server.errors import A2ZServerError, RateLimited

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: object) -> JSONResponse:
    """Build a problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(A2ZServerError)
    async def _ours(_req: Request, exc: A2ZServerError) -> JSONResponse:
        resp = problem(exc.status, exc.title, str(exc) or exc.title, **exc.extra())
        if isinstance(exc, RateLimited):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem(
            422, "Invalid request", "the request does not match the schema", errors=errors
        )

    @app.exception_handler(HTTPException)
    async def _http(req: Request, exc: HTTPException) -> JSONResponse:
        resp = problem(exc.status_code, str(exc.detail), str(exc.detail))
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405:
            resp.headers["Allow"] = ", ".join(_allowed_methods(req))
        return resp


def _allowed_methods(req: Request) -> list[str]:
    # Starlette answers 405 from the first route whose path matches, listing only that route's
    # methods; a path served by several routes (GET list + POST create) needs all of them.
    methods: set[str] = set()
    for route in req.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(req.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)
