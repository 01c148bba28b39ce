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
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Protocol


class Broadcast(Protocol):
    """Carries signals to the other replicas (and back in through :meth:`Notifier.remote`).
    ``work`` is how many jobs became claimable (0: none)."""

    def publish(self, work: int, webhooks: bool, jobs: Iterable[str]) -> None: ...


class Notifier:
    """Wake-ups for long polls (claims, event streams, the webhook dispatcher)."""

    def __init__(self) -> None:
        self._work_waiters: deque[asyncio.Future[None]] = deque()
        self._webhooks = asyncio.Event()
        self._job_waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.broadcast: Broadcast | None = None

    # ------------------------------------------------------------------ signals from this replica
    def work_available(self, count: int = 0) -> None:
        """``count`` jobs became claimable (0: unknown, wake every waiting claim)."""
        self._wake_work(count)
        if self.broadcast is not None:
            self.broadcast.publish(max(count, 1) if count else 1_000_000, False, ())

    def webhooks_queued(self) -> None:
        self._webhooks.set()
        if self.broadcast is not None:
            self.broadcast.publish(0, True, ())

    def job_changed(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        self._wake_jobs(ids)
        if self.broadcast is not None and ids:
            self.broadcast.publish(0, False, ids)

    # ------------------------------------------------------------------ signals from other replicas
    def remote(self, work: int, webhooks: bool, jobs: Iterable[str]) -> None:
        """Apply a signal another replica sent (not re-broadcast)."""
        if work:
            self._wake_work(work)
        if webhooks:
            self._webhooks.set()
        self._wake_jobs(jobs)

    # ------------------------------------------------------------------ waiting
    def _wake_work(self, count: int) -> None:
        """Wake the ``count`` longest-waiting claims (all when 0): a job for one worker should
        not send every idle worker of the fleet to the database."""
        woken = 0
        while self._work_waiters and (count <= 0 or woken < count):
            waiter = self._work_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                woken += 1

    def _wake_jobs(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            for waiter in self._job_waiters.get(job_id, ()):
                waiter.set()

    async def wait_for_work(self, timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._work_waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
        finally:
            if not waiter.done():
                waiter.cancel()
                try:
                    self._work_waiters.remove(waiter)
                except ValueError:
                    pass

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
