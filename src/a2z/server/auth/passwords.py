"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendation)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()

# Verifying against this when the account does not exist keeps the timing of "no such user"
# and "wrong password" alike, so login time does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("a2z-no-such-user")


def hash_password(password: str) -> str:
    """Return an encoded argon2id hash."""
    return _hasher.hash(password)


def verify_password(encoded: str | None, password: str) -> bool:
    """True when ``password`` matches ``encoded``; ``None`` burns the same time and fails."""
    try:
        return _hasher.verify(encoded or _DUMMY_HASH, password) and encoded is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
