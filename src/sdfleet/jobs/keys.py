"""API keys: created once (the secret is shown once), stored as SHA-256, checked on every call.

A key is ``sdf_<prefix>_<secret>``. Keys carry 256 bits of randomness, so a plain SHA-256 is the
right hash (a slow password hash would only cost CPU per request without adding safety).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sdfleet.domain import new_id
from sdfleet.errors import AuthError, NotFound, ValidationError
from sdfleet.jobs.webhooks import new_webhook_secret
from sdfleet.store import ApiKeyRecord, JobStore, SqlTx, Tenant

SCOPES = ("user", "admin", "worker", "metrics")
_CACHE_SECONDS = 5.0
_USER_KEYS_CACHE_SECONDS = 2.0


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling: a tenant with scopes (from an API key, or the open local mode)."""

    tenant: str
    scopes: frozenset[str]
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def is_worker(self) -> bool:
        return "worker" in self.scopes

    @property
    def tenant_filter(self) -> str | None:
        """The tenant whose rows this caller may see; None for admins (they see all)."""
        return None if self.is_admin else self.tenant


@dataclass(slots=True, frozen=True)
class CreatedKey:
    """A new key; ``secret`` is the only copy of the full key."""

    record: ApiKeyRecord
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    """Create, list, revoke and verify API keys. Verification is cached for a few seconds."""

    def __init__(self, store: JobStore, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._user_keys: tuple[float, bool] | None = None  # (valid until, any user/admin key)

    async def create(self, tenant: str, scopes: list[str], name: str = "") -> CreatedKey:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValidationError(f"scopes must be some of {', '.join(SCOPES)}", field="scopes")
        if not tenant or len(tenant) > 64 or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ValidationError("tenant must be 1-64 letters, digits, '-' or '_'", field="tenant")
        prefix = secrets.token_hex(4)
        secret = f"sdf_{prefix}_{secrets.token_urlsafe(32)}"
        now = self.clock()
        record = ApiKeyRecord(
            id=new_id("k"),
            tenant=tenant,
            name=name,
            key_hash=hash_key(secret),
            prefix=prefix,
            scopes=tuple(sorted(set(scopes))),
            created_at=now,
        )

        def tx_fn(tx: SqlTx) -> None:
            if tx.get_tenant(tenant) is None:
                tx.insert_tenant(
                    Tenant(id=tenant, webhook_url=None, webhook_secret=new_webhook_secret(), created_at=now)
                )
            tx.insert_api_key(record)

        await self.store.write(tx_fn)
        self._user_keys = None
        return CreatedKey(record, secret)

    async def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        return await self.store.read(lambda tx: tx.list_api_keys(tenant))

    async def revoke(self, key_id: str) -> None:
        now = self.clock()
        if not await self.store.write(lambda tx: tx.revoke_api_key(key_id, now)):
            raise NotFound(f"no active key {key_id!r}", field="key_id")
        self._cache.clear()
        self._user_keys = None

    async def has_user_keys(self) -> bool:
        """Whether any active ``user`` or ``admin`` key exists (worker and metrics keys do not count).

        Asked on every call without credentials (they are refused once such a key exists), so the answer
        is kept for a couple of seconds; this process's own create/revoke refresh it at once, another
        process's (``sdfleet keys create``, another replica) within ``_USER_KEYS_CACHE_SECONDS``."""
        now = time.monotonic()
        if self._user_keys is not None and self._user_keys[0] > now:
            return self._user_keys[1]
        found = await self.store.read(
            lambda tx: tx.count_active_keys("user") + tx.count_active_keys("admin") > 0
        )
        self._user_keys = (now + _USER_KEYS_CACHE_SECONDS, found)
        return found

    async def verify(self, secret: str) -> Principal:
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            digest = hash_key(secret)
            record = await self.store.read(lambda tx: tx.find_api_key(digest))
            principal = None
            if record is not None and record.revoked_at is None:
                principal = Principal(tenant=record.tenant, scopes=frozenset(record.scopes), key_id=record.id)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = (now + _CACHE_SECONDS, principal)
        if principal is None:
            raise AuthError("unknown or revoked API key")
        return principal
