"""The store room: durable state on SQLAlchemy Core, one implementation for SQLite and PostgreSQL.

Doors (import these from ``sdfleet.store``; the modules behind them are the room's own):

- :class:`JobStore`, the protocol the use cases in :mod:`sdfleet.jobs` hold, and
  :class:`SqlStore`, its implementation, built by the composition root (``create_app``, the CLI);
- :class:`SqlTx`, the transaction ``store.write(fn)``/``store.read(fn)`` hands to ``fn`` — only
  :mod:`sdfleet.jobs` composes its statements into use cases;
- the records it returns beside the domain types: :class:`Tenant`, :class:`Buckets`,
  :class:`ApiKeyRecord`, :class:`OutboxMessage`, :class:`LeaseAnswer`, :class:`CompletedJob`,
  :class:`Affinity`.

Two more doors for the composition root only: :mod:`sdfleet.store.migrate` (Alembic schema
migrations) and :mod:`sdfleet.store.pgnotify` (wake-ups between replicas over LISTEN/NOTIFY).
"""

from __future__ import annotations

from sdfleet.store.base import JobStore
from sdfleet.store.records import (
    Affinity,
    ApiKeyRecord,
    Buckets,
    CompletedJob,
    LeaseAnswer,
    OutboxMessage,
    Tenant,
)
from sdfleet.store.sql import SqlStore
from sdfleet.store.tx import SqlTx

__all__ = [
    "Affinity",
    "ApiKeyRecord",
    "Buckets",
    "CompletedJob",
    "JobStore",
    "LeaseAnswer",
    "OutboxMessage",
    "SqlStore",
    "SqlTx",
    "Tenant",
]
