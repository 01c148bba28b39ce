"""The records the store returns beside the domain types of :mod:`sdfleet.domain`.

Plain dataclasses, free of SQL: tenants and their buckets, API keys and webhook messages as
stored, and the small values a transaction takes or answers (a heartbeat's lease answer, an
accepted completion, the affinity a claim scores against).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.domain import Job


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


@dataclass(slots=True, frozen=True)
class LeaseAnswer:
    """The store's word on one job in a heartbeat."""

    held: bool
    cancel: bool
    previous_step: int
    tenant: str


@dataclass(slots=True)
class CompletedJob:
    """One accepted completion, for :meth:`SqlTx.complete_jobs`."""

    job: Job
    epoch: int
    engine_seconds: float
    cost: float
    result: dict[str, Any]
    timings: dict[str, float]


@dataclass(slots=True, frozen=True)
class Affinity:
    """What a cache-aware claim scores jobs against (see :func:`sdfleet.store.claim.claim_statement`).

    ``loaded``/``cached``: registry names in the claiming worker's memory / on its disk;
    ``loaded_elsewhere``/``cached_elsewhere``: the same over the other live workers (a name counts
    at its warmest); ``aged_before``: jobs queued at or before this time are past the aging bound;
    ``window``: how many of the oldest claimable jobs are scored."""

    loaded: Sequence[str]
    cached: Sequence[str]
    loaded_elsewhere: Sequence[str]
    cached_elsewhere: Sequence[str]
    aged_before: float
    window: int

    @property
    def empty(self) -> bool:
        """Nobody reported a warm model: every score is equal, the plain claim order is the same."""
        return not (self.loaded or self.cached or self.loaded_elsewhere or self.cached_elsewhere)
