"""The published OpenAPI document: errors as RFC 9457 problems, bearer auth declared.

FastAPI documents its own validation-error body; ours is a problem document, and every route
can also answer 400/401/403/404/409/429 problems. Declaring them here, in one place, keeps the
document true for every route (schemathesis checks it).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from a2z.server.problems import PROBLEM_JSON

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}},
            },
        },
        "rule_error": {
            "type": "object",
            "description": "Why a Sigma rule was refused (a2z.rules.errors)",
            "required": ["kind", "message"],
            "properties": {
                "kind": {"type": "string", "enum": ["syntax", "unsupported"]},
                "message": {"type": "string"},
                "feature": {"type": ["string", "null"]},
            },
        },
    },
}
_ERRORS = {
    "400": "Malformed request (e.g. a cursor this API did not issue)",
    "401": "Missing, invalid or expired credential",
    "403": "The caller's role does not allow this",
    "404": "No such object for this caller (also another tenant's)",
    "409": "Conflicts with existing state",
    "422": "The request does not match the schema",
    "429": "Too many requests; see Retry-After",
}
_PUBLIC = {"/api/v1/auth/login", "/api/v1/auth/refresh"}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the customised document (built once, then cached)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _build(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _build(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _PROBLEM
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from /api/v1/auth/login, or an API key (a2zk_...)",
        }
    }
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in spec["paths"].items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for code, text in _ERRORS.items():
                responses[code] = {"description": text, "content": problem}
            if path not in _PUBLIC:
                operation["security"] = [{"bearer": []}]
    return spec
