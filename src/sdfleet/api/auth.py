"""Authentication and scopes.

* ``user`` keys reach the jobs and account API; ``admin`` keys everything, across tenants;
  ``worker`` keys reach only ``/v1/worker/*``; ``metrics`` keys only ``/metrics`` (for Prometheus).
* Open mode (the embedded default, ``auth=auto`` on loopback): a call without credentials acts as
  tenant ``local`` with every scope — but only while the server has no ``user`` or ``admin`` key and
  no A1111 Basic users (``a1111_api_auth``). Once one exists, a call without a key gets 401 like
  anywhere else (a single-user box stays keyless; a shared one is closed the moment it has tenants).
  A call *with* a key is always held to that key's scopes.
* Keys travel in headers only (``Authorization: Bearer`` or ``X-API-Key``), never in a URL.
"""

from __future__ import annotations

from fastapi import Request

from sdfleet.config import Settings
from sdfleet.errors import AuthError, ConfigError, Forbidden
from sdfleet.jobs.keys import KeyService, Principal

LOCAL_TENANT = "local"
OPEN_PRINCIPAL = Principal(tenant=LOCAL_TENANT, scopes=frozenset({"user", "admin", "worker", "metrics"}))


def auth_is_open(settings: Settings) -> bool:
    """Whether this configuration may accept calls without credentials (while no user/admin key
    exists, see :func:`anonymous_allowed`). Refuses unsafe combinations."""
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
    # A1111 Basic users are tenants: their jobs must not be readable without credentials on /v1.
    return not settings.a1111_api_auth


async def anonymous_allowed(keys: KeyService, open_mode: bool) -> bool:
    """Whether a call without credentials acts as the local admin now: open mode, and no user or
    admin key exists (cached for a couple of seconds by :meth:`KeyService.has_user_keys`)."""
    return open_mode and not await keys.has_user_keys()


def credentials(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
        raise AuthError("the Authorization header must be 'Bearer <api key>'", field="authorization")
    return request.headers.get("x-api-key") or None


async def principal_for(request: Request, keys: KeyService, open_mode: bool) -> Principal:
    """The caller of ``request``: its key's principal, else the open local principal (see the module)."""
    secret = credentials(request)
    if secret:
        return await keys.verify(secret)
    if open_mode:
        if not await keys.has_user_keys():
            return OPEN_PRINCIPAL
        raise AuthError(
            "an API key is required: this server has API keys, so calls without one are refused "
            "(send 'Authorization: Bearer <key>'; create one with `sdfleet keys create`)"
        )
    raise AuthError("an API key is required: send 'Authorization: Bearer <key>'")


def require_scope(principal: Principal, scope: str) -> Principal:
    if scope in principal.scopes or (scope in ("user", "metrics") and principal.is_admin):
        return principal
    if scope == "user" and principal.is_worker:
        raise Forbidden("worker tokens can only reach /v1/worker/*")
    raise Forbidden(f"this endpoint needs the {scope!r} scope")
