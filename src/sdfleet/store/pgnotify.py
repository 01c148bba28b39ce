"""Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY.

Signals from this replica are batched for a few milliseconds and sent as one ``NOTIFY`` (a JSON
payload with the sender's id, so a replica ignores its own); a dedicated connection ``LISTEN``s
in a thread and hands what arrives to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("sdfleet.pgnotify")
CHANNEL = "sdfleet"
MAX_PAYLOAD = 7000  # PostgreSQL allows 8000 bytes


Signal = Callable[[int, bool, list[str]], None]


class PgBroadcast:
    """Publishes this replica's signals (``publish``) and hands other replicas' ones to
    ``on_remote(work, webhooks, job_ids)`` on the event loop."""

    def __init__(self, url: str, on_remote: Signal, *, flush_seconds: float = 0.01):
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.on_remote = on_remote
        self.flush_seconds = flush_seconds
        self.sender = f"{os.getpid()}-{id(self):x}"
        self._work = 0
        self._webhooks = False
        self._jobs: set[str] = set()
        self._dirty = asyncio.Event()
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def publish(self, work: int, webhooks: bool, jobs: Iterable[str]) -> None:
        self._work += work
        self._webhooks |= webhooks
        self._jobs.update(jobs)
        self._dirty.set()

    async def start(self) -> None:
        import psycopg

        self._loop = asyncio.get_running_loop()
        self._send_conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        ready = threading.Event()
        self._listener = threading.Thread(target=self._listen, args=(ready,), name="pg-listen", daemon=True)
        self._listener.start()
        await asyncio.to_thread(ready.wait, 10)
        self._tasks.append(asyncio.create_task(self._flush_loop()))

    def _payloads(self) -> list[str]:
        base = {"s": self.sender, "w": self._work, "h": self._webhooks}
        jobs = sorted(self._jobs)
        self._work, self._webhooks = 0, False
        self._jobs = set()
        payloads: list[str] = []
        chunk: list[str] = []
        for job_id in jobs:
            chunk.append(job_id)
            if len(chunk) * 34 > MAX_PAYLOAD:
                payloads.append(json.dumps({**base, "j": chunk}))
                chunk = []
        payloads.append(json.dumps({**base, "j": chunk}))
        return payloads

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.flush_seconds)
            self._dirty.clear()
            try:
                for payload in self._payloads():
                    await self._send_conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except Exception as exc:  # a lost signal costs latency only
                log.warning("pgnotify.send_failed error=%s", exc)
                with contextlib.suppress(Exception):
                    import psycopg

                    await self._send_conn.close()
                    self._send_conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    def _listen(self, ready: threading.Event) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except Exception as exc:
                ready.set()
                if not self._stop.is_set():
                    log.warning("pgnotify.listen_failed error=%s", exc)
                    self._stop.wait(1.0)

    def _deliver(self, payload: str) -> None:
        try:
            data: dict[str, Any] = json.loads(payload)
        except ValueError:
            return
        if data.get("s") == self.sender or self._loop is None:
            return
        self._loop.call_soon_threadsafe(
            self.on_remote, int(data.get("w") or 0), bool(data.get("h")), list(data.get("j") or ())
        )

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2)
        with contextlib.suppress(Exception):
            await self._send_conn.close()
