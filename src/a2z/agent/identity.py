"""The agent's own identity on disk: its private key (never leaves the host), its certificate
chain, and the pinned root; plus the TLS context that presents them."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

KEY_FILE, CERT_FILE, ROOT_FILE = "key.pem", "cert.pem", "root.pem"
RELEASE_FILE = "release.pem"


@dataclass(frozen=True)
class IdentityFiles:
    """Where an enrolled agent keeps its key, certificate chain and pinned root."""

    directory: Path

    @property
    def key(self) -> Path:
        """Private key, mode 0600."""
        return self.directory / KEY_FILE

    @property
    def cert(self) -> Path:
        """Agent certificate followed by its tenant CA."""
        return self.directory / CERT_FILE

    @property
    def root(self) -> Path:
        """The server's agent root, pinned at enrollment."""
        return self.directory / ROOT_FILE

    @property
    def release(self) -> Path:
        """The release-signing certificate (issued by the root), from enrollment."""
        return self.directory / RELEASE_FILE

    def client_context(self) -> ssl.SSLContext:
        """TLS that trusts only the pinned root and presents the agent's certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.root))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def certificate(self) -> x509.Certificate:
        """The agent's current certificate (the first in the chain file)."""
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def renewal_due(self, now: datetime | None = None) -> bool:
        """True once half the certificate's lifetime has passed (as SPIRE does)."""
        cert = self.certificate()
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return (now or datetime.now(UTC)) >= start + (end - start) / 2


def write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 (keys, and anything holding a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
