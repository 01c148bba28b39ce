"""Fixtures shared by every test layer: settings on a temp dir, a migrated store, a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sdfleet.config import Settings
from sdfleet.store.migrate import upgrade
from sdfleet.store.sql import SqlStore


class FakeClock:
    """A clock tests move by hand, so lease tests never sleep."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlStore]:
    s = SqlStore(settings.resolved_database_url())
    await upgrade(s)
    yield s
    await s.close()
