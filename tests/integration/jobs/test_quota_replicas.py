"""Two orchestrator replicas (two JobServices, each with its own connection pool) on one PostgreSQL
database, submitting at once for one tenant, never overspend its buckets or its concurrency limit
(hypothesis: random limits, random batches, submits racing through both replicas)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdfleet.config import Quotas, Settings
from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.errors import LimitExceeded, RateLimited
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import JobRequest
from sdfleet.store import SqlStore
from sdfleet.store.migrate import upgrade
from tests.support.clock import FakeClock

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, list[SqlStore]]]:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    loop = asyncio.new_event_loop()
    stores = [SqlStore(url, pool_size=4), SqlStore(url, pool_size=4)]
    loop.run_until_complete(upgrade(stores[0]))
    try:
        yield loop, stores
    finally:
        for s in stores:
            loop.run_until_complete(s.close())
        loop.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _requests(n: int) -> list[JobRequest]:
    spec = GenerationSpec(prompt="a cat", width=64, height=64, steps=20)
    return [JobRequest(kind=JobKind.TXT2IMG, spec=spec) for _ in range(n)]


async def _race(services: list[JobService], tenant: str, batches: list[int]) -> tuple[int, list[int]]:
    """Submit every batch at once, alternating replicas; (jobs accepted, sizes refused)."""

    async def one(i: int, size: int) -> int:
        try:
            await services[i % 2].submit(tenant, _requests(size))
            return size
        except (RateLimited, LimitExceeded):
            return -size

    results = await asyncio.gather(*(one(i, size) for i, size in enumerate(batches)))
    return sum(r for r in results if r > 0), [-r for r in results if r < 0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    burst=st.integers(1, 12),
    max_concurrent=st.none() | st.integers(1, 12),
    batches=st.lists(st.integers(1, 4), min_size=2, max_size=14),
)
def test_two_replicas_never_overspend_a_tenant(
    replicas: tuple[asyncio.AbstractEventLoop, list[SqlStore]],
    tmp_path: Path,
    burst: int,
    max_concurrent: int | None,
    batches: list[int],
) -> None:
    loop, stores = replicas
    clock = FakeClock()  # time stands still: the bucket never refills during the race
    quotas = Quotas(rate=0.001, burst=burst, max_concurrent=max_concurrent)
    services = [JobService(s, Settings(data_dir=tmp_path, quotas=quotas), clock=clock) for s in stores]
    tenant = f"t-{uuid.uuid4().hex[:8]}"  # a fresh tenant (and bucket) per example
    accepted, refused = loop.run_until_complete(_race(services, tenant, batches))
    allowed = min(burst, max_concurrent) if max_concurrent is not None else burst
    stored = loop.run_until_complete(stores[1].read(lambda tx: tx.count_live_jobs(tenant)))
    assert stored == accepted <= allowed
    if refused:  # and nothing was refused that still fitted once the race was over
        assert allowed - accepted < max(refused)
