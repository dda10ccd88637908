"""Typed server errors; the API turns each into one RFC 9457 problem response."""

from __future__ import annotations


class A2ZServerError(Exception):
    """Root of the server's errors. ``status`` is the HTTP status it maps to."""

    status = 500
    title = "Internal error"

    def extra(self) -> dict[str, object]:
        """Members the problem document carries beside type, title, status and detail."""
        return {}


class NotFound(A2ZServerError):
    """The object does not exist for this principal (also used across tenants: never 403)."""

    status = 404
    title = "Not found"


class Unauthenticated(A2ZServerError):
    """No valid credential was presented."""

    status = 401
    title = "Unauthenticated"


class Forbidden(A2ZServerError):
    """The principal's role does not allow this action on its own tenant."""

    status = 403
    title = "Forbidden"


class Conflict(A2ZServerError):
    """The request clashes with existing state (e.g. a duplicate name)."""

    status = 409
    title = "Conflict"


class TenantScopeError(A2ZServerError):
    """A query on tenant-owned data ran without a tenant in scope, or wrote another tenant's row."""

    status = 500
    title = "Tenant scope violation"


class RateLimited(A2ZServerError):
    """Too many requests; ``retry_after`` says when to come back (seconds)."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InvalidInput(A2ZServerError):
    """The request is well-formed but asks for something impossible."""

    status = 422
    title = "Invalid request"


class Unavailable(A2ZServerError):
    """A service the request needs (the bus) could not take it now; retry later."""

    status = 503
    title = "Service unavailable"
