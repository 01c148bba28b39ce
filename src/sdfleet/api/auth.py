"""Authentication and scopes.

* ``user`` keys reach the jobs and account API; ``admin`` keys everything, across tenants;
  ``worker`` keys reach only ``/v1/worker/*``.
* Open mode (embedded default, loopback only): a call without credentials acts as tenant
  ``local`` with every scope. A call *with* a key is always held to that key's scopes.
"""

from __future__ import annotations

from fastapi import Request

from sdfleet.config import Settings
from sdfleet.errors import AuthError, ConfigError, Forbidden
from sdfleet.jobs.keys import KeyService, Principal

LOCAL_TENANT = "local"
OPEN_PRINCIPAL = Principal(tenant=LOCAL_TENANT, scopes=frozenset({"user", "admin", "worker"}))


def auth_is_open(settings: Settings) -> bool:
    """Whether calls without credentials are accepted. Refuses unsafe combinations."""
    mode = settings.auth
    if mode not in ("auto", "required", "off"):
        raise ConfigError("auth must be auto, required or off", field="auth")
    if mode == "required":
        return False
    if not settings.binds_loopback():
        if mode == "off":
            raise ConfigError(
                f"refusing to listen on {settings.host} without authentication: "
                "keep --host 127.0.0.1, or create an API key (`sdfleet keys create`) and leave auth on",
                field="auth",
            )
        return False
    return True


def credentials(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
        raise AuthError("the Authorization header must be 'Bearer <api key>'", field="authorization")
    return request.headers.get("x-api-key") or None


async def principal_for(
    request: Request, keys: KeyService, open_mode: bool, query_key: str | None = None
) -> Principal:
    secret = credentials(request) or query_key
    if secret:
        return await keys.verify(secret)
    if open_mode:
        return OPEN_PRINCIPAL
    raise AuthError("an API key is required: send 'Authorization: Bearer <key>'")


def require_scope(principal: Principal, scope: str) -> Principal:
    if scope in principal.scopes or (scope == "user" and principal.is_admin):
        return principal
    if scope == "user" and principal.is_worker:
        raise Forbidden("worker tokens can only reach /v1/worker/*")
    raise Forbidden(f"this endpoint needs the {scope!r} scope")
