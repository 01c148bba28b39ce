"""Wake-ups: a worker's long-poll claim when work arrives, an event stream when its job has news,
the webhook dispatcher when messages are queued.

Within one process this is a set of asyncio events. Across replicas a :class:`Broadcast` (with
PostgreSQL: LISTEN/NOTIFY, see :mod:`sdfleet.store.pgnotify`) carries the same signals to every
other replica. Everything also re-checks the store now and then, so a lost signal only costs
latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol


class Broadcast(Protocol):
    """Carries signals to the other replicas (and back in through :meth:`Notifier.remote`)."""

    def publish(self, work: bool, webhooks: bool, jobs: Iterable[str]) -> None: ...


class Notifier:
    """Wake-ups for long polls (claims, event streams, the webhook dispatcher)."""

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._webhooks = asyncio.Event()
        self._job_waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.broadcast: Broadcast | None = None

    # ------------------------------------------------------------------ signals from this replica
    def work_available(self) -> None:
        self._wake_work()
        if self.broadcast is not None:
            self.broadcast.publish(True, False, ())

    def webhooks_queued(self) -> None:
        self._webhooks.set()
        if self.broadcast is not None:
            self.broadcast.publish(False, True, ())

    def job_changed(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        self._wake_jobs(ids)
        if self.broadcast is not None and ids:
            self.broadcast.publish(False, False, ids)

    # ------------------------------------------------------------------ signals from other replicas
    def remote(self, work: bool, webhooks: bool, jobs: Iterable[str]) -> None:
        """Apply a signal another replica sent (not re-broadcast)."""
        if work:
            self._wake_work()
        if webhooks:
            self._webhooks.set()
        self._wake_jobs(jobs)

    # ------------------------------------------------------------------ waiting
    def _wake_work(self) -> None:
        self._work.set()
        self._work = asyncio.Event()

    def _wake_jobs(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            for waiter in self._job_waiters.get(job_id, ()):
                waiter.set()

    async def wait_for_work(self, timeout: float) -> None:
        event = self._work
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def wait_for_webhooks(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._webhooks.wait(), timeout)
        self._webhooks.clear()

    async def wait_for_job(self, job_id: str, timeout: float) -> None:
        waiter = asyncio.Event()
        self._job_waiters[job_id].add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout)
        finally:
            waiters = self._job_waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._job_waiters[job_id]
