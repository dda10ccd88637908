"""The release-signing key (Ed25519) and its certificate, issued by the agent root.

Agents pin the root at enrollment; the root vouches for the signing key with a certificate the
agent receives at enrollment, so a release signature chains to the one thing the agent trusts.
The private key sits in the data directory beside the root's, encrypted with the server secret.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from a2z.records.release import ReleaseManifest, signed_bytes

KEY_FILE, CERT_FILE = "release.key", "release.pem"


def load_or_create_signing_key(directory: Path, secret: bytes) -> ed25519.Ed25519PrivateKey:
    """The release-signing key, created (mode 0600, encrypted) on first use."""
    path = directory / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=secret)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def signing_certificate(
    directory: Path,
    key: ed25519.Ed25519PrivateKey,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
) -> bytes:
    """The signing key's certificate (PEM) from the root; (re)issued when missing or stale."""
    path = directory / CERT_FILE
    if path.exists():
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        same_key = cert.public_key() == key.public_key()
        if same_key and cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=30):
            return path.read_bytes()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "A2Z SOC release signing")])
        )
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=3650), root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return pem


def sign(key: ed25519.Ed25519PrivateKey, manifest: ReleaseManifest) -> str:
    """The manifest's signature, base64."""
    return base64.b64encode(key.sign(signed_bytes(manifest))).decode()
