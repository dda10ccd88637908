"""Login route."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from a2z.server.auth.tokens import ACCESS_TTL_S, issue_access_token
from a2z.server.deps import Context
from a2z.server.tenants import service as tenants

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginIn(BaseModel):
    """Email and password."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class TokenOut(BaseModel):
    """A bearer access token."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


@router.post("/login")
def login(body: LoginIn, ctx: Context) -> TokenOut:
    """Exchange an email and password for a short-lived access token."""
    with ctx.sessions.system() as session:
        principal = tenants.authenticate_password(
            session=session, email=body.email, password=body.password
        )
    token = issue_access_token(ctx.secret, principal)
    return TokenOut(access_token=token, expires_in=ACCESS_TTL_S)
