"""The job store's contract: the :class:`JobStore` protocol the use cases in :mod:`sdfleet.jobs`
depend on. The records it returns beside the domain types are in :mod:`sdfleet.store.records`.

There is one implementation, :class:`sdfleet.store.sql.SqlStore`, for SQLite and PostgreSQL; the
protocol exists so the use cases depend on how transactions run, not on the engines. It is typed against the
transaction class itself (:mod:`sdfleet.store.tx`, which imports only records, rows, claim and
schema — never this module nor ``sql``): with one implementation, a mirror protocol of its ~60
statements would be ceremony; the seam that matters is that only :mod:`sdfleet.jobs` holds a
transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from sdfleet.store.tx import SqlTx

T = TypeVar("T")


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
