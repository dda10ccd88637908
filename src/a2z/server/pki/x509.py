"""Certificate building blocks (``cryptography``): CAs, CSR signing, identity in the SAN.

An agent certificate binds its tenant and agent in one SAN URI, ``urn:a2z:<tenant>:<agent>``;
the gateway reads them from there and nowhere else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IDENTITY_PREFIX = "urn:a2z:"


class CertificateError(ValueError):
    """A certificate, CSR or key that cannot be used as asked."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """What an agent certificate asserts."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID


def new_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key: small, fast, universally supported by TLS stacks."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when ``password`` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_key(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Inverse of ``key_pem``."""
    key = serialization.load_pem_private_key(pem, password)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("expected an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM encoding."""
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, hex: what agents pin."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_ca(
    common_name: str,
    *,
    days: int = 3650,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA: a self-signed root (may sign one level of CAs) or, with ``issuer``, an
    intermediate that may sign end-entity certificates only."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=0 if issuer else 1), critical=True
        )
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if signer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    lifetime: timedelta,
    not_before: datetime | None,
) -> x509.Certificate:
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def sign_agent_csr(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    csr_pem: bytes,
    identity: AgentIdentity,
    *,
    lifetime: timedelta,
    not_before: datetime | None = None,
) -> x509.Certificate:
    """A client certificate for an agent's own key; the identity is ours, not the CSR's."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise CertificateError("certificate request signature is invalid")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError("agent keys must be EC (P-256)")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"agent {identity.agent_id}")])
    uri = f"{IDENTITY_PREFIX}{identity.tenant_id}:{identity.agent_id}"
    return _leaf(
        ca,
        ca_key,
        subject,
        public_key,
        [x509.UniformResourceIdentifier(uri)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        lifetime,
        not_before,
    )


def server_cert(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    names: list[str],
    *,
    lifetime: timedelta = timedelta(days=825),
) -> x509.Certificate:
    """The gateway's TLS certificate for ``names`` (DNS names or IP addresses)."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return _leaf(
        ca, ca_key, subject, key.public_key(), sans, ExtendedKeyUsageOID.SERVER_AUTH, lifetime, None
    )


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR for ``key`` (the subject is ignored: the server decides the identity)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2z-agent")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def identity_of(cert: x509.Certificate) -> AgentIdentity:
    """The tenant and agent an agent certificate names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no subject alternative name") from exc
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(IDENTITY_PREFIX)
    ]
    if len(uris) != 1:
        raise CertificateError("certificate does not name exactly one agent identity")
    try:
        tenant, agent = uris[0][len(IDENTITY_PREFIX) :].split(":")
        return AgentIdentity(uuid.UUID(tenant), uuid.UUID(agent))
    except ValueError as exc:
        raise CertificateError("malformed agent identity") from exc


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` signed ``cert`` (signature checked, not just names compared)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
