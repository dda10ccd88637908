"""Walks the OpenAPI document: every route, and a valid example body for each.

The isolation and role tests iterate over what the server publishes, so a route added later is
swept automatically (or fails the sweep until the test knows its id parameters).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    """One operation."""

    method: str
    path: str
    params: tuple[str, ...]  # path parameters
    body: dict[str, Any] | None  # request body schema, resolved


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolve(spec, spec["components"]["schemas"][name])
    return schema


def routes(spec: dict[str, Any]) -> list[Route]:
    """Every /api/v1 operation in the document."""
    out = []
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "path")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = _resolve(spec, body["schema"]) if body else None
            out.append(Route(method, path, params, schema))
    return out


def example(spec: dict[str, Any], schema: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A minimal valid instance of ``schema``: required fields only, ``overrides`` win."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return example(spec, options[0], overrides)
    if "enum" in schema:
        return schema["enum"][-1]  # least privileged role, for role enums
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        out = {}
        for name in schema.get("required", []):
            out[name] = (
                overrides[name] if name in overrides else example(spec, props[name], overrides)
            )
        return out
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return False
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if kind == "string":
        return "x" * max(schema.get("minLength", 1), 1)
    raise AssertionError(f"no example for schema {schema}")


def fill(path: str, ids: dict[str, str]) -> str:
    """Substitute ``{param}`` placeholders."""
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path
