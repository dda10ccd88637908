"""Agent release manifests: what the backend signs (Ed25519) and the agent verifies.

The signature covers the version as well as the package's digest and size, so a correctly
signed package cannot be passed off as another version (no replayed downgrade).
"""

from __future__ import annotations

import msgspec

MANIFEST_HEADER = "A2Z-Release"  # HTTP header carrying the manifest with the package
MAX_PACKAGE_BYTES = 256 * 1024 * 1024  # a larger download is refused


class ReleaseManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One published agent package."""

    version: str  # PEP 440, e.g. 0.2.0
    filename: str  # the wheel or zipapp's file name
    sha256: str  # hex digest of the package bytes
    size: int  # bytes
    signature: str = ""  # Ed25519 over ``signed_bytes``, base64


def signed_bytes(manifest: ReleaseManifest) -> bytes:
    """The exact bytes the signature covers (every field but the signature itself)."""
    return "\n".join(
        ("a2z-release-v1", manifest.version, manifest.filename, manifest.sha256, str(manifest.size))
    ).encode()
