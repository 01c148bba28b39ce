"""Fixtures shared by every test layer: settings on a temp dir, a migrated store (SQLite and
PostgreSQL), a clock, and the real servers of :mod:`tests.support.services`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdfleet.config import Settings
from sdfleet.store import SqlStore
from sdfleet.store.migrate import upgrade
from tests.support.clock import FakeClock

pytest_plugins = ["tests.support.services"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        lease_seconds=30,
        heartbeat_seconds=5,
        reaper_interval=0.2,
        allow_private_webhooks=True,
        webhook_backoff_base=0.2,
        webhook_backoff_max=1.0,
        allowed_hosts=["testserver"],  # FastAPI's TestClient sends Host: testserver
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend: the store is held to one behaviour on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    import psycopg

    server: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(database_url, pool_size=4)
    await upgrade(s)
    yield s
    await s.close()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Tiny random SD 1.x / SDXL models (folders, single files, LoRAs, an embedding), built offline
    once per test session. Skips when the [engine] extra is not installed."""
    pytest.importorskip("torch", reason="needs torch (the [engine] extra)")
    pytest.importorskip("diffusers", reason="needs diffusers (the [engine] extra)")
    from sdfleet.testing.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
