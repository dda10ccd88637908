"""Login throttling per account and per source address (sliding window, in the store).

The failures live in the ``login_failures`` table, so every API process on the database —
``a2z server --workers N`` or several hosts — counts against the same limits.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from a2z.server.auth.models import LoginFailure
from a2z.server.errors import RateLimited
from a2z.server.store.base import utcnow
from a2z.server.store.session import SessionFactory


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class LoginThrottle:
    """Refuses logins for a key once it has ``limit`` failures within ``window_s``."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        per_account: int = 10,
        per_source: int = 50,
        window_s: float = 15 * 60,
    ) -> None:
        self._sessions = sessions
        self.per_account = per_account
        self.per_source = per_source
        self.window = timedelta(seconds=window_s)

    def check(self, account: str, source: str) -> None:
        """Raise RateLimited if either key is over its limit."""
        limits = {_key("a", account): self.per_account, _key("s", source): self.per_source}
        now = utcnow()
        with self._sessions.system() as session:
            rows = session.execute(
                select(LoginFailure.key, func.count(), func.min(LoginFailure.at))
                .where(LoginFailure.key.in_(limits), LoginFailure.at > now - self.window)
                .group_by(LoginFailure.key)
            ).all()
        for key, failures, oldest in rows:
            if failures >= limits[key]:
                raise RateLimited(
                    "too many failed logins; try again later",
                    retry_after=self._retry_after(oldest, now),
                )

    def failed(self, account: str, source: str) -> None:
        """Count a failure against both keys; forget failures older than the window."""
        now = utcnow()
        with self._sessions.system() as session:
            session.add_all(
                [
                    LoginFailure(key=_key("a", account), at=now),
                    LoginFailure(key=_key("s", source), at=now),
                ]
            )
            session.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window))

    def succeeded(self, account: str) -> None:
        """A correct password clears the account's failures (not the source's)."""
        with self._sessions.system() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key == _key("a", account)))

    def _retry_after(self, oldest: datetime, now: datetime) -> int:
        return int((oldest + self.window - now).total_seconds()) + 1
