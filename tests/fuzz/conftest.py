"""Fixtures of the fuzz tests: one live orchestrator (uvicorn, SQLite, local blobs) with API keys of every
kind created before it starts, and a FakeEngine worker in its own thread so fuzzed jobs really progress."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdfleet.config import Settings, WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.jobs.keys import KeyService
from sdfleet.store.migrate import upgrade
from sdfleet.store.sql import SqlStore
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.runner import Worker
from tests.support.live import Orchestrator, make_settings

FUZZ_EXAMPLES = int(os.environ.get("SDFLEET_FUZZ_EXAMPLES", "15"))
"""Generated cases per operation and generation mode (valid, invalid); each is sent once per identity."""


@dataclass(frozen=True)
class Identities:
    """The headers of each caller the fuzzer plays, by name."""

    headers: dict[str, dict[str, str]]


async def _create_keys(settings: Settings) -> dict[str, str]:
    store = SqlStore(settings.resolved_database_url(), pool_size=2)
    try:
        await upgrade(store)
        keys = KeyService(store)
        return {
            "user": (await keys.create("fuzz-user", ["user"], name="fuzz user")).secret,
            "worker": (await keys.create("fuzz-fleet", ["worker"], name="fuzz worker")).secret,
            "admin": (await keys.create("fuzz-admin", ["admin"], name="fuzz admin")).secret,
        }
    finally:
        await store.close()


class ThreadWorker:
    """A FakeEngine :class:`Worker` running in its own thread and event loop (the fuzz tests are
    synchronous: Hypothesis drives them)."""

    def __init__(self, server: str, token: str) -> None:
        self.settings = WorkerSettings(
            server=server,
            token=token,
            name="fuzz-worker",
            engine="fake",
            prefetch=0,
            claim_wait=1.0,
            upload_concurrency=2,
            shutdown_grace=2.0,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-worker", daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        client = WorkerClient(self.settings.server, self.settings.token, backoff=Backoff(base=0.05, cap=0.3))
        self._worker = Worker(self.settings, FakeEngine(step_seconds=0.001), client=client)
        self._ready.set()
        try:
            loop.run_until_complete(self._worker.run())
            loop.run_until_complete(client.aclose())
        finally:
            loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fuzz worker did not start")

    def stop(self) -> None:
        if self._loop is None or self._worker is None or not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._worker.stop(), self._loop).result(timeout=15)
        self._thread.join(timeout=15)


@pytest.fixture(scope="session")
def fuzz_orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orchestrator, Identities]]:
    """A live orchestrator with a user, a worker and an admin key, and a FakeEngine worker serving it.
    A1111 generation calls wait for their job up to two minutes: the fuzzed native jobs queued before them
    drain well before that, so a deliberate 504 never shows up as a server error."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(root, a1111_request_timeout=120.0)
    secrets = asyncio.run(_create_keys(settings))
    orch = Orchestrator(settings)
    orch.start()
    worker = ThreadWorker(orch.url, secrets["worker"])
    worker.start()
    identities = Identities(
        headers={
            "user": {"Authorization": f"Bearer {secrets['user']}"},
            "worker": {"Authorization": f"Bearer {secrets['worker']}"},
            "admin": {"Authorization": f"Bearer {secrets['admin']}"},
            "anonymous": {},
        }
    )
    try:
        yield orch, identities
    finally:
        worker.stop()
        orch.stop()
