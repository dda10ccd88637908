"""Release routes: the published agent packages (read-only; publishing is `a2z admin`)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from a2z.server.deps import Context, Reader
from a2z.server.releases import service as releases
from a2z.server.schemas import Out

router = APIRouter(prefix="/api/v1", tags=["releases"])


class ReleaseOut(Out):
    """A published agent package; agents download it over the gateway (mutual TLS)."""

    version: str
    filename: str
    sha256: str
    size: int
    signature: str  # Ed25519 over the manifest (version, file name, sha256, size), base64
    published_at: datetime


class ReleaseList(Out):
    """Every release, newest first, and the certificate agents verify signatures with."""

    items: list[ReleaseOut]
    signing_certificate: str  # PEM, issued by the agent root


@router.get("/releases")
def list_releases(principal: Reader, ctx: Context) -> ReleaseList:
    """The published agent releases."""
    with ctx.sessions.system() as session:
        rows = releases.list_releases(session=session)
        return ReleaseList(
            items=[ReleaseOut.model_validate(r) for r in rows],
            signing_certificate=ctx.release_cert.decode(),
        )
