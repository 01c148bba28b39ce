"""Wake-ups inside one orchestrator process: a worker's long-poll claim when work arrives, an
event stream when its job has news. Other replicas are reached by polling the store (and, with
PostgreSQL, LISTEN/NOTIFY), so a missed wake-up only costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class Notifier:
    """In-process wake-ups for long polls (claims and event streams)."""

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._webhooks = asyncio.Event()
        self._job_waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def work_available(self) -> None:
        self._work.set()
        self._work = asyncio.Event()

    async def wait_for_work(self, timeout: float) -> None:
        event = self._work
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def webhooks_queued(self) -> None:
        self._webhooks.set()

    async def wait_for_webhooks(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._webhooks.wait(), timeout)
        self._webhooks.clear()

    def job_changed(self, job_ids: list[str] | set[str] | tuple[str, ...]) -> None:
        for job_id in job_ids:
            for waiter in self._job_waiters.get(job_id, ()):
                waiter.set()

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
