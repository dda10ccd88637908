"""``a2z admin``: operator commands that act directly on the store (no running server needed)."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from a2z.server.agents import service as agents
from a2z.server.audit import service as audit
from a2z.server.auth import keys
from a2z.server.config import load_secret
from a2z.server.errors import InvalidInput, NotFound
from a2z.server.pki.root import load_or_create_ca
from a2z.server.pki.x509 import fingerprint
from a2z.server.releases import service as releases
from a2z.server.releases.signing import load_or_create_signing_key, signing_certificate
from a2z.server.store.session import SessionFactory
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role, Tenant

log = logging.getLogger(__name__)
ACTOR = "cli"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``."""
    m = _DURATION.match(text.strip())
    if not m:
        raise InvalidInput(f"not a duration: {text!r} (use e.g. 30m, 1h, 7d)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass
class Admin:
    """The admin commands, over one session factory and the server's data directory."""

    sessions: SessionFactory
    data_dir: Path

    def resolve_tenant(self, ref: str) -> uuid.UUID:
        """A tenant by id or name."""
        with self.sessions.system() as session:
            try:
                tenant_id = uuid.UUID(ref)
            except ValueError:
                tenant = tenants.get_tenant_by_name(session=session, name=ref)
            else:
                tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"no tenant {ref!r}")
            return tenant.id

    def create_tenant(self, name: str) -> dict[str, str]:
        """New tenant."""
        with self.sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name=name)
        with self.sessions.tenant(tenant.id) as session:
            audit.record(
                session=session, actor=ACTOR, action="tenant.create", target=f"tenant:{tenant.id}"
            )
        return {"id": str(tenant.id), "name": tenant.name}

    def set_tenant(
        self, tenant: str, changes: dict[str, int | float | str | None]
    ) -> dict[str, str]:
        """Change a tenant's retention, region or limits (audited); prints the result."""
        tenant_id = self.resolve_tenant(tenant)
        with self.sessions.system() as session:
            diff = tenants.update_settings(session=session, tenant_id=tenant_id, changes=changes)
            row = tenants.get_tenant(session=session, tenant_id=tenant_id)
            out = {"id": str(row.id), "name": row.name}
            out |= {name: str(getattr(row, name)) for name in tenants.SETTINGS}
        if diff:
            with self.sessions.tenant(tenant_id) as session:
                audit.record(
                    session=session,
                    actor=ACTOR,
                    action="tenant.update",
                    target=f"tenant:{tenant_id}",
                    detail=dict(diff),
                )
        return out

    def create_user(
        self, tenant: str, email: str, role: Role, password: str | None
    ) -> dict[str, str]:
        """Add a member, creating the person (with ``password`` or a generated one) if new."""
        tenant_id = self.resolve_tenant(tenant)
        generated = None
        with self.sessions.system() as session:
            exists = tenants.find_user(session=session, email=email) is not None
        if not exists and password is None:
            password = generated = secrets.token_urlsafe(15)
        with self.sessions.tenant(tenant_id) as session:
            user = tenants.ensure_user(session=session, email=email, password=password)
            tenants.add_member(session=session, user=user, role=role)
            audit.record(
                session=session,
                actor=ACTOR,
                action="user.create",
                target=f"user:{user.id}",
                detail={"role": role.value},
            )
        out = {
            "id": str(user.id),
            "email": user.email,
            "tenant_id": str(tenant_id),
            "role": role.value,
        }
        if generated:
            out["password"] = generated
        return out

    def create_api_key(self, tenant: str, role: Role, name: str) -> dict[str, str]:
        """New API key; the secret is printed once."""
        tenant_id = self.resolve_tenant(tenant)
        with self.sessions.tenant(tenant_id) as session:
            row, secret = keys.create_api_key(
                session=session, role=role, name=name, created_by=ACTOR
            )
            audit.record(
                session=session,
                actor=ACTOR,
                action="api_key.create",
                target=f"key:{row.id}",
                detail={"role": role.value},
            )
        return {"id": str(row.id), "tenant_id": str(tenant_id), "role": role.value, "key": secret}

    def create_enrollment_token(self, tenant: str, ttl: timedelta, uses: int) -> dict[str, str]:
        """New enrollment token; the secret is printed once."""
        tenant_id = self.resolve_tenant(tenant)
        with self.sessions.tenant(tenant_id) as session:
            row, token = agents.create_enrollment_token(
                session=session, ttl=ttl, uses=uses, created_by=ACTOR
            )
            audit.record(
                session=session,
                actor=ACTOR,
                action="enrollment_token.create",
                target=f"enrollment_token:{row.id}",
                detail={"uses": uses},
            )
        root, _ = load_or_create_ca(self.data_dir / "pki", load_secret(self.data_dir))
        return {
            "id": str(row.id),
            "tenant_id": str(tenant_id),
            "token": token,
            "expires_at": row.expires_at.isoformat(),
            "uses": str(uses),
            "ca_pin": fingerprint(root),  # for `a2z agent enroll --ca-pin`
        }

    def publish_release(self, package: Path, version: str) -> dict[str, str]:
        """Store and sign an agent package (wheel or zipapp) as release ``version``."""
        if not package.is_file():
            raise InvalidInput(f"no such file: {package}")
        secret = load_secret(self.data_dir)
        directory = self.data_dir / "pki"
        root, root_key = load_or_create_ca(directory, secret)
        key = load_or_create_signing_key(directory, secret)
        signing_certificate(directory, key, root, root_key)  # agents get it at enrollment
        with self.sessions.system() as session:
            row = releases.publish(
                session=session, data_dir=self.data_dir, key=key, package=package,
                version=version, actor=ACTOR,
            )  # fmt: skip
        # Releases belong to no tenant, so there is no tenant audit log to write to.
        log.info(
            "published agent release %s (%s, sha256 %s)", row.version, row.filename, row.sha256
        )
        return {
            "version": row.version,
            "filename": row.filename,
            "sha256": row.sha256,
            "size": str(row.size),
            "signature": row.signature,
        }
