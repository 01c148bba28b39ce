"""The job store's contract: records it returns beside the domain types, and the protocols.

There is one implementation, :class:`sdfleet.store.sql.SqlStore`, for SQLite and PostgreSQL; the
protocols exist so the use cases in :mod:`sdfleet.jobs` depend on a contract, not on SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from sdfleet.store.sql import SqlTx

T = TypeVar("T")


@dataclass(slots=True)
class Tenant:
    """An owner of jobs. Its webhook secret signs every webhook sent for its jobs."""

    id: str
    webhook_url: str | None
    webhook_secret: str
    created_at: float
    limits: dict[str, Any] = field(default_factory=dict)  # an admin's overrides of the default quotas
    weight: float | None = None  # fair-share weight (None: the default)


@dataclass(slots=True, frozen=True)
class Buckets:
    """A tenant's two token buckets as stored (tokens ``None``: full) and its live job count."""

    rate_tokens: float | None
    rate_ts: float | None
    gpu_tokens: float | None
    gpu_ts: float | None


@dataclass(slots=True)
class ApiKeyRecord:
    """A stored API key: only the SHA-256 of the secret is kept."""

    id: str
    tenant: str
    name: str
    key_hash: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None


@dataclass(slots=True)
class OutboxMessage:
    """A webhook delivery waiting in (or done from) the durable outbox."""

    message_id: str
    job_id: str
    tenant: str
    url: str
    event_type: str
    payload: str
    next_attempt_at: float
    created_at: float
    attempts: int = 0
    state: str = "pending"
    last_error: str | None = None
    delivered_at: float | None = None


class JobStore(Protocol):
    """Durable state of the whole system: jobs, attempts, workers, keys, outputs, events, outbox.

    ``write(fn)`` runs ``fn(tx)`` in one read-write transaction (all its statements commit
    together, or none); ``read(fn)`` in a read-only one that never blocks writers. ``fn`` is a
    plain function: it runs in the store's own thread, so it must not touch the event loop.
    """

    url: str

    async def write(self, fn: Callable[[SqlTx], T]) -> T: ...

    async def read(self, fn: Callable[[SqlTx], T]) -> T: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
