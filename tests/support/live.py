"""A live orchestrator and in-process workers for tests that need a job to really flow through the queue:
uvicorn on 127.0.0.1 (a free port) in its own thread, a temporary SQLite database and blob directory, and
:class:`~sdfleet.worker.runner.Worker` instances with the FakeEngine in the test's event loop.

"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn

from sdfleet.api.app import create_app
from sdfleet.config import Settings, WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.jobs.keys import KeyService
from sdfleet.store.migrate import ensure_schema
from sdfleet.store.sql import SqlStore
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.runner import Worker
from tests.support import free_port


class Orchestrator:
    """One orchestrator's worth of server, started and stopped from the test."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.url = f"http://127.0.0.1:{settings.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = create_app(self.settings, clock=self.clock)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.settings.port,
            log_level="warning",
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=0.5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="orchestrator", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the orchestrator did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def create_key(self, tenant: str, *scopes: str) -> str:
        """A new API key in this orchestrator's database (as ``sdfleet keys create`` would make it)."""

        async def create() -> str:
            store = SqlStore(self.settings.resolved_database_url())
            try:
                await ensure_schema(store, migrate=True)
                return (await KeyService(store).create(tenant, list(scopes))).secret
            finally:
                await store.close()

        with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever runs in this thread
            return pool.submit(asyncio.run, create()).result()

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Orchestrator settings for a live test: short leases and heartbeats, a fast reaper."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "data_dir": tmp_path / "data",
        "lease_seconds": 5.0,
        "heartbeat_seconds": 0.2,
        "reaper_interval": 0.1,
        "claim_max_wait": 2.0,
        "poll_seconds": 0.5,
        "secret_key": "test-secret",
        **overrides,
    }
    return Settings(**values)


class WorkerPool:
    """In-process workers (FakeEngine by default) attached to one orchestrator."""

    def __init__(self, server_url: str, token: str = "") -> None:
        self.server_url = server_url
        self.token = token
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, engine: FakeEngine | None = None, **overrides: Any) -> Worker:
        values: dict[str, Any] = {
            "server": self.server_url,
            "name": f"test-worker-{len(self.workers)}",
            "engine": "fake",
            "prefetch": 0,
            "claim_wait": 1.0,
            "upload_concurrency": 2,
            "shutdown_grace": 5.0,
            "token": self.token,
            **overrides,
        }
        settings = WorkerSettings(**values)
        client = WorkerClient(settings.server, settings.token, backoff=Backoff(base=0.05, cap=0.3))
        worker = Worker(settings, engine or FakeEngine(step_seconds=0.005), client=client)
        task = asyncio.create_task(worker.run())
        self.workers.append((worker, task))
        await wait_until(lambda: _true(worker.worker_id is not None), what="the worker to register")
        return worker

    async def stop(self) -> None:
        for worker, task in self.workers:
            await worker.stop()
            await task
            await worker.client.aclose()
        self.workers.clear()


async def _true(value: bool) -> bool:
    return value


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 8.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
