"""Enrollment, certificate renewal and revocation, and the check of a presented certificate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from a2z.server.agents import service as agents
from a2z.server.agents.models import EnrollmentToken
from a2z.server.audit import service as audit
from a2z.server.auth import credentials
from a2z.server.errors import Unauthenticated
from a2z.server.pki.models import AgentCert, TenantCA
from a2z.server.pki.root import AgentRoot
from a2z.server.pki.x509 import (
    AgentIdentity,
    CertificateError,
    cert_pem,
    fingerprint,
    identity_of,
    issued_by,
    key_pem,
    load_key,
    make_ca,
    sign_agent_csr,
)
from a2z.server.store.base import utcnow
from a2z.server.store.session import ScopedSession, SessionFactory

DEFAULT_CERT_LIFETIME = timedelta(days=1)  # short: renewal is automatic at half-life


@dataclass(frozen=True, slots=True)
class Issued:
    """A freshly issued agent certificate and the chain the agent presents with it."""

    identity: AgentIdentity
    cert_pem: str  # agent certificate followed by the tenant CA (the chain to present)
    root_pem: str  # the root the agent pins
    not_after: str


def _tenant_ca(
    session: ScopedSession, root: AgentRoot, secret: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The tenant's signing CA, created at its first enrollment (the oldest one signs)."""
    row = session.scalars(select(TenantCA).order_by(TenantCA.created_at, TenantCA.id)).first()
    if row is None:
        tenant_id = session.tenant_id
        cert, key = make_ca(
            f"A2Z SOC tenant {tenant_id}",
            issuer=(root.cert, root.key),
            sans=[x509.UniformResourceIdentifier(f"urn:a2z:{tenant_id}")],
        )
        row = TenantCA(
            tenant_id=tenant_id,
            cert_pem=cert_pem(cert).decode(),
            key_pem=key_pem(key, secret).decode(),
        )
        session.add(row)
        session.flush()
    return x509.load_pem_x509_certificate(row.cert_pem.encode()), load_key(
        row.key_pem.encode(), secret
    )


def _issue(
    session: ScopedSession,
    root: AgentRoot,
    secret: bytes,
    identity: AgentIdentity,
    csr_pem: bytes,
    lifetime: timedelta,
) -> Issued:
    ca_cert, ca_key = _tenant_ca(session, root, secret)
    try:
        cert = sign_agent_csr(ca_cert, ca_key, csr_pem, identity, lifetime=lifetime)
    except CertificateError as exc:
        raise Unauthenticated(f"certificate request refused: {exc}") from exc
    session.add(
        AgentCert(
            tenant_id=identity.tenant_id,
            serial=format(cert.serial_number, "x"),
            agent_id=identity.agent_id,
            fingerprint=fingerprint(cert),
            not_after=cert.not_valid_after_utc,
        )
    )
    chain = cert_pem(cert) + cert_pem(ca_cert)
    return Issued(
        identity, chain.decode(), cert_pem(root.cert).decode(), cert.not_valid_after_utc.isoformat()
    )


def enroll(
    *,
    sessions: SessionFactory,
    root: AgentRoot,
    secret: bytes,
    token: str,
    csr_pem: bytes,
    name: str,
    source: str,
    lifetime: timedelta = DEFAULT_CERT_LIFETIME,
) -> Issued:
    """Trade a valid enrollment token and a CSR for a new agent and its certificate.

    The token is single-use or limited-use, short-lived and tenant-scoped; the tenant of the
    new agent is the token's. Every refusal looks the same to the caller.
    """
    refused = Unauthenticated("enrollment refused: token invalid, expired, revoked or used up")
    cred = credentials.parse(token, credentials.ENROLLMENT_TOKEN)
    with sessions.tenant(cred.tenant_id) as session:
        row = session.scalars(
            select(EnrollmentToken).where(EnrollmentToken.id == cred.row_id).with_for_update()
        ).one_or_none()
        if (
            row is None
            or not cred.matches(row.secret_hash)
            or row.revoked_at is not None
            or row.expires_at <= utcnow()
            or row.uses_left <= 0
        ):
            raise refused
        row.uses_left -= 1
        agent = agents.create(session=session, name=name)
        identity = AgentIdentity(cred.tenant_id, agent.id)
        issued = _issue(session, root, secret, identity, csr_pem, lifetime)
        audit.record(
            session=session,
            actor=f"enrollment_token:{row.id}",
            action="agent.enroll",
            target=f"agent:{agent.id}",
            source=source,
            detail={"name": name},
        )
    return issued


def renew(
    *,
    sessions: SessionFactory,
    root: AgentRoot,
    secret: bytes,
    identity: AgentIdentity,
    csr_pem: bytes,
    lifetime: timedelta = DEFAULT_CERT_LIFETIME,
) -> Issued:
    """A new certificate for an already authenticated agent (its identity is unchanged)."""
    with sessions.tenant(identity.tenant_id) as session:
        issued = _issue(session, root, secret, identity, csr_pem, lifetime)
        audit.record(
            session=session,
            actor=f"agent:{identity.agent_id}",
            action="agent.renew_certificate",
            target=f"agent:{identity.agent_id}",
        )
    return issued


def authenticate_certificate(*, sessions: SessionFactory, der: bytes) -> AgentIdentity:
    """Who a TLS-verified client certificate belongs to, if it still may connect.

    The handshake proved the chain ends at our root and the certificate is in date. Here:
    the tenant named in the certificate must be the tenant whose CA signed it (a certificate
    from tenant A's CA claiming tenant B is refused), it must not be revoked, and its agent
    must still exist.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        identity = identity_of(cert)
    except (ValueError, CertificateError) as exc:
        raise Unauthenticated(f"unusable client certificate: {exc}") from exc
    serial = format(cert.serial_number, "x")
    with sessions.tenant(identity.tenant_id) as session:
        # Any of the tenant's CAs (two first enrollments racing may each have made one).
        cas = [
            x509.load_pem_x509_certificate(ca.cert_pem.encode())
            for ca in session.scalars(select(TenantCA))
        ]
        issued = session.get(AgentCert, (identity.tenant_id, serial))
        agent = agents.get(session=session, agent_id=identity.agent_id)
        if not any(issued_by(cert, ca) for ca in cas):
            raise Unauthenticated("certificate was not issued by its tenant's CA")
        if issued is None or issued.revoked_at is not None or issued.agent_id != identity.agent_id:
            raise Unauthenticated("certificate is revoked or unknown")
        if agent is None:
            raise Unauthenticated("agent no longer exists")
    return identity


def revoke_agent_certificates(*, session: ScopedSession, agent_id: uuid.UUID) -> int:
    """Revoke every live certificate of an agent; open connections close within a minute."""
    result = session.execute(
        update(AgentCert)
        .where(AgentCert.agent_id == agent_id, AgentCert.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(AgentCert.serial)
    )
    return len(result.all())


def still_valid(*, sessions: SessionFactory, identity: AgentIdentity, serial: str) -> bool:
    """Re-check of an open connection's certificate (revocation, agent deletion)."""
    with sessions.tenant(identity.tenant_id) as session:
        row = session.get(AgentCert, (identity.tenant_id, serial))
        agent = agents.get(session=session, agent_id=identity.agent_id)
        return row is not None and row.revoked_at is None and agent is not None
