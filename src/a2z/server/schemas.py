"""Pieces of the HTTP schema shared by several routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, field_validator

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
CursorParam = Annotated[
    str | None,
    Query(max_length=300, pattern=r"^[A-Za-z0-9_=:.-]+$", description="from the previous page"),
]


class Body(BaseModel):
    """Request bodies refuse unknown fields (422): no mass assignment of tenant_id, role, ..."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # NUL cannot be stored in PostgreSQL text and is never meaningful in our fields.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Out(BaseModel):
    """Response bodies are closed: they say exactly what the schema says."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)
