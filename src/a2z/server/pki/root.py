"""The agent root CA and the gateway's TLS certificate, kept in the server's data directory.

Hierarchy: root CA (pinned by agents) → one intermediate CA per tenant (in the database, key
encrypted) → agent client certificates. The root also signs the gateway's server certificate.
The gateway trusts only the root; which tenant signed an agent's certificate is checked after
the handshake against that tenant's CA.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from a2z.server.pki.x509 import (
    cert_pem,
    fingerprint,
    key_pem,
    load_key,
    make_ca,
    new_key,
    server_cert,
)

GATEWAY_CREDENTIALS = "gateway.pem"  # the gateway's private key, certificate and the root


@dataclass(frozen=True)
class AgentRoot:
    """The root CA, the gateway certificate, and where they live."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    directory: Path

    @property
    def pin(self) -> str:
        """SHA-256 of the root's DER: what ``a2z agent enroll --ca-pin`` compares."""
        return fingerprint(self.cert)

    def server_context(self) -> ssl.SSLContext:
        """TLS for the gateway: our certificate; client certificates optional, chained to us."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # One read of the file (replaced whole by each issuing process), loaded from a private
        # copy: ``load_cert_chain`` opens its file twice, once for the chain and once for the
        # key, and a replacement in between paired one process's key with another's chain.
        credentials = (self.directory / GATEWAY_CREDENTIALS).read_bytes()
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".load.") as copy:
            copy.write(credentials)  # mode 0600, like the file it copies
            copy.flush()
            ctx.load_cert_chain(copy.name)
        ctx.load_verify_locations(cadata=cert_pem(self.cert).decode())
        # Optional, because enrollment happens before the agent has a certificate; the channel
        # itself refuses a connection without one.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_create_ca(
    directory: Path, secret: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The root CA, created on first use (the server's start, or `a2z admin`)."""
    directory.mkdir(parents=True, exist_ok=True)
    root_pem, root_key = directory / "root.pem", directory / "root.key"
    if root_pem.exists():
        return x509.load_pem_x509_certificate(root_pem.read_bytes()), load_key(
            root_key.read_bytes(), secret
        )
    cert, key = make_ca("A2Z SOC agent root")
    _write(root_key, key_pem(key, secret), 0o600)
    _write(root_pem, cert_pem(cert), 0o644)
    return cert, key


def load_or_create_root(directory: Path, secret: bytes, names: list[str]) -> AgentRoot:
    """Load the root (creating it on first start) and (re)issue the gateway certificate."""
    cert, key = load_or_create_ca(directory, secret)
    gateway_key = new_key()
    gateway = server_cert(cert, key, gateway_key, names)
    # Key and chain in one file, replaced atomically: every server process (``--workers N``)
    # issues its own at start, and with two files a starting gateway once loaded one process's
    # key beside another's half-written certificate (ssl.SSLError: PEM lib).
    _replace(
        directory / GATEWAY_CREDENTIALS,
        key_pem(gateway_key) + cert_pem(gateway) + cert_pem(cert),
        0o600,
    )
    (directory / "gateway.key").unlink(missing_ok=True)  # the separate key of earlier versions
    return AgentRoot(cert, key, directory)
