"""``a2z agent enroll``: trade a one-time token for a certificate, pinning the server's CA.

1. Fetch the server's agent root over TLS *without* trusting it yet, and compare its SHA-256
   with the pin the administrator gave (printed by ``a2z admin enrollment-token create``).
2. Generate the agent's key pair here; only a CSR leaves the host.
3. Over TLS that now trusts only the pinned root, send the token and CSR; receive the
   certificate that binds this agent to its tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import urllib.parse
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from a2z.agent.config import AgentConfig, write_config
from a2z.agent.identity import IdentityFiles, write_private


class EnrollmentError(Exception):
    """Enrollment failed; the message says why in one line."""


class Issued(msgspec.Struct):
    """The server's answer (see the server's gateway)."""

    tenant_id: str
    agent_id: str
    cert: str
    root: str
    not_after: str
    release_cert: str = ""  # the release-signing certificate, issued by the root


def _normalise_pin(pin: str) -> str:
    return pin.lower().removeprefix("sha256:").replace(":", "").strip()


def _gateway(server: str) -> tuple[str, int]:
    url = urllib.parse.urlsplit(server)
    if url.scheme not in ("wss", "https") or not url.hostname:
        raise EnrollmentError(f"server must be wss://HOST:PORT (got {server!r})")
    return url.hostname, url.port or 443


def fetch_pinned_root(server: str, pin: str, *, timeout: float = 10) -> bytes:
    """The server's root certificate (PEM), if its SHA-256 matches ``pin``."""
    import http.client

    host, port = _gateway(server)
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # nothing is trusted until the pin matches
    conn = http.client.HTTPSConnection(host, port, context=unverified, timeout=timeout)
    try:
        conn.request("GET", "/ca.pem")
        resp = conn.getresponse()
        body = resp.read(64 * 1024)
    except OSError as exc:
        raise EnrollmentError(f"cannot reach {host}:{port}: {exc}") from exc
    finally:
        conn.close()
    if resp.status != 200:
        raise EnrollmentError(f"server answered {resp.status} for its CA certificate")
    try:
        root = x509.load_pem_x509_certificate(body)
    except ValueError as exc:
        raise EnrollmentError("server sent something that is not a certificate") from exc
    actual = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()
    if actual != _normalise_pin(pin):
        raise EnrollmentError(f"server CA {actual} does not match the pin; refusing to enroll")
    return body


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2z-agent")])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def new_key_and_csr(files: IdentityFiles) -> bytes:
    """Generate a P-256 key into ``files.key`` (0600) and return a CSR for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(files.key.with_suffix(".new"), pem)
    return _csr(key)


async def _exchange(url: str, ctx: ssl.SSLContext, message: bytes) -> Issued:
    try:
        async with connect(url, ssl=ctx, open_timeout=15, close_timeout=5) as ws:
            await ws.send(message.decode())
            reply = await asyncio.wait_for(ws.recv(), timeout=30)
    except InvalidStatus as exc:
        raise EnrollmentError(f"server refused: HTTP {exc.response.status_code}") from exc
    except ConnectionClosed as exc:
        reason = exc.rcvd.reason if exc.rcvd else "connection closed"
        raise EnrollmentError(f"server refused: {reason}") from exc
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise EnrollmentError(f"cannot reach {url}: {exc}") from exc
    try:
        return msgspec.json.decode(reply, type=Issued)
    except msgspec.DecodeError as exc:
        raise EnrollmentError("server sent an unreadable answer") from exc


def _install(files: IdentityFiles, issued: Issued, root_pem: bytes) -> None:
    if issued.root.encode().strip() != root_pem.strip():
        raise EnrollmentError("server issued a certificate under a different root than pinned")
    release = _release_certificate(issued.release_cert.encode(), root_pem)
    files.key.with_suffix(".new").replace(files.key)
    write_private(files.cert, issued.cert.encode())
    write_private(files.root, root_pem)
    if release is not None:
        write_private(files.release, release)


def _release_certificate(pem: bytes, root_pem: bytes) -> bytes | None:
    """The release-signing certificate, if the pinned root issued it (else enrollment fails:
    a server that cannot prove its release key would have the agent trust nothing it ships)."""
    if not pem.strip():
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(root_pem))
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise EnrollmentError(
            f"release-signing certificate not issued by the pinned root: {exc}"
        ) from exc
    if not isinstance(cert.public_key(), ed25519.Ed25519PublicKey):
        raise EnrollmentError("release-signing certificate does not hold an Ed25519 key")
    return pem


def enroll(server: str, token: str, pin: str, directory: Path, name: str) -> AgentConfig:
    """Enroll and write the agent's identity and config into ``directory``."""
    host, port = _gateway(server)
    root_pem = fetch_pinned_root(server, pin)
    files = IdentityFiles(directory)
    csr = new_key_and_csr(files)
    trust = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=root_pem.decode())
    request = msgspec.json.encode({"token": token, "csr": csr.decode(), "name": name})
    issued = asyncio.run(_exchange(f"wss://{host}:{port}/enroll", trust, request))
    _install(files, issued, root_pem)
    config = AgentConfig(
        server=f"wss://{host}:{port}/channel",
        agent_id=issued.agent_id,
        tenant_id=issued.tenant_id,
        identity_dir=str(directory),
    )
    write_config(directory / "agent.json", config)
    return config


async def renew(config: AgentConfig) -> None:
    """Replace the agent's key and certificate, authenticating with the current ones."""
    host, port = _gateway(config.server)
    files = IdentityFiles(Path(config.identity_dir))
    csr = new_key_and_csr(files)
    message = msgspec.json.encode({"csr": csr.decode()})
    issued = await _exchange(f"wss://{host}:{port}/renew", files.client_context(), message)
    if issued.agent_id != config.agent_id:
        raise EnrollmentError("server renewed a different identity")
    _install(files, issued, files.root.read_bytes())
