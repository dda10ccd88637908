"""Publishing and serving agent releases."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric import ed25519
from packaging.version import InvalidVersion, Version
from sqlalchemy import select

from a2z.records.release import MAX_PACKAGE_BYTES, ReleaseManifest
from a2z.server.errors import Conflict, InvalidInput
from a2z.server.releases.models import AgentRelease
from a2z.server.releases.signing import sign
from a2z.server.store.session import ScopedSession

RELEASES_DIR = "releases"
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def publish(
    *,
    session: ScopedSession,
    data_dir: Path,
    key: ed25519.Ed25519PrivateKey,
    package: Path,
    version: str,
    actor: str,
) -> AgentRelease:
    """Store ``package`` as release ``version`` with its signature (system session)."""
    try:
        canonical = str(Version(version))
    except InvalidVersion as exc:
        raise InvalidInput(f"not a version: {version!r} (PEP 440, e.g. 0.2.0)") from exc
    if not _FILENAME.match(package.name):
        raise InvalidInput(f"unsuitable package file name: {package.name!r}")
    size = package.stat().st_size
    if size > MAX_PACKAGE_BYTES:
        raise InvalidInput(f"package of {size} bytes exceeds {MAX_PACKAGE_BYTES}")
    if session.get(AgentRelease, canonical) is not None:
        raise Conflict(f"release {canonical} is already published")
    target = data_dir / RELEASES_DIR / canonical
    target.mkdir(parents=True, exist_ok=True)
    stored = target / package.name
    shutil.copyfile(package, stored)
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    manifest = ReleaseManifest(
        version=canonical, filename=package.name, sha256=digest, size=stored.stat().st_size
    )
    row = AgentRelease(
        version=canonical, filename=package.name, sha256=digest, size=manifest.size,
        signature=sign(key, manifest), published_by=actor[:64],
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def list_releases(*, session: ScopedSession) -> list[AgentRelease]:
    """Every release, newest version first."""
    rows = list(session.scalars(select(AgentRelease)))
    return sorted(rows, key=lambda r: Version(r.version), reverse=True)


def manifest_of(row: AgentRelease) -> ReleaseManifest:
    """The signed manifest of a release."""
    return ReleaseManifest(
        version=row.version, filename=row.filename, sha256=row.sha256, size=row.size,
        signature=row.signature,
    )  # fmt: skip


def package_path(data_dir: Path, row: AgentRelease) -> Path:
    """Where a release's bytes are stored."""
    return data_dir / RELEASES_DIR / row.version / row.filename


def manifest_header(row: AgentRelease) -> str:
    """The manifest as sent beside the package."""
    return msgspec.json.encode(manifest_of(row)).decode()
