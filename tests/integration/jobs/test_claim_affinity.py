"""Cache-aware claims (DESIGN.md §3): warm jobs first, loaded before cached, a job warmer on
another live worker left for it — until the aging bound — and priority and stalled rules intact.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from sdfleet.config import Settings
from sdfleet.domain import Capabilities, Feature, GenerationSpec, JobKind, LoraRef
from sdfleet.jobs.affinity import WarmIndex, warm_names
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import JobRequest, Registration
from sdfleet.store import SqlStore
from tests.support.clock import FakeClock


@pytest.fixture
def service(store: SqlStore, settings: Settings, clock: FakeClock) -> JobService:
    settings.affinity_max_wait_seconds = 30.0
    return JobService(store, settings, clock=clock)


def job(model: str | None, *loras: str, priority: int = 0, prompt: str = "a cat") -> JobRequest:
    spec = GenerationSpec(
        prompt=prompt, width=64, height=64, model=model, loras=[LoraRef(name=n) for n in loras]
    )
    return JobRequest(kind=JobKind.TXT2IMG, spec=spec, priority=priority)


async def submit(service: JobService, clock: FakeClock, *requests: JobRequest) -> list[str]:
    """Submit one job per second (ids and queue times both in order)."""
    ids = []
    for r in requests:
        [s] = await service.submit("t1", [r])
        ids.append(s.job.id)
        clock.advance(1)
    return ids


async def worker(service: JobService, name: str) -> str:
    w = await service.register_worker(
        "local", Registration(name=name, capabilities=Capabilities(features=Feature.LORA))
    )
    return w.id


async def claim_one(
    service: JobService, worker_id: str, loaded: list[str] | None = None, cached: list[str] | None = None
) -> str | None:
    result = await service.claim(worker_id, None, loaded_models=loaded or [], cached_models=cached or [])
    return result.jobs[0].id if result.jobs else None


async def test_warm_job_is_preferred_over_an_older_cold_one(service: JobService, clock: FakeClock) -> None:
    cold, warm = await submit(service, clock, job("ckpt-b"), job("ckpt-a", "lora-x"))
    w = await worker(service, "w")
    assert await claim_one(service, w, loaded=["ckpt-a", "lora:lora-x"]) == warm
    assert await claim_one(service, w, loaded=["ckpt-a"]) == cold  # nothing warmer left: work goes on


async def test_loaded_beats_cached_beats_cold(service: JobService, clock: FakeClock) -> None:
    cold, cached, loaded = await submit(service, clock, job("ckpt-c"), job("ckpt-b"), job("ckpt-a"))
    w = await worker(service, "w")
    warm = {"loaded": ["ckpt-a"], "cached": ["ckpt-a", "ckpt-b"]}
    assert [await claim_one(service, w, **warm) for _ in range(3)] == [loaded, cached, cold]


async def test_loras_count_after_the_checkpoint(service: JobService, clock: FakeClock) -> None:
    only_lora, ckpt_only, both = await submit(
        service, clock, job("ckpt-b", "lora-x"), job("ckpt-a", "lora-y"), job("ckpt-a", "lora-x")
    )
    w = await worker(service, "w")
    warm = {"loaded": ["ckpt-a", "lora:lora-x"]}
    assert [await claim_one(service, w, **warm) for _ in range(3)] == [both, ckpt_only, only_lora]


async def test_job_warm_elsewhere_waits_for_that_worker_until_it_ages(
    service: JobService, clock: FakeClock
) -> None:
    a, b = await worker(service, "a"), await worker(service, "b")
    await service.claim(a, None, loaded_models=["ckpt-a"])  # a reports its warm set (queue empty)
    [for_a] = await submit(service, clock, job("ckpt-a"))
    assert await claim_one(service, b, loaded=["ckpt-b"]) is None  # left for a, which holds ckpt-a
    clock.advance(28)  # queued 29 s ago
    assert await claim_one(service, b, loaded=["ckpt-b"]) is None
    clock.advance(1)  # waited the bound: now anyone takes it
    assert await claim_one(service, b, loaded=["ckpt-b"]) == for_a


async def test_aging_bound_makes_an_old_cold_job_win(service: JobService, clock: FakeClock) -> None:
    [old_cold] = await submit(service, clock, job("ckpt-z"))
    clock.advance(40)
    warm = await submit(service, clock, job("ckpt-a"), job("ckpt-a"))
    w = await worker(service, "w")
    assert await claim_one(service, w, loaded=["ckpt-a"]) == old_cold
    assert await claim_one(service, w, loaded=["ckpt-a"]) == warm[0]


async def test_cold_everywhere_job_is_taken_at_once(service: JobService, clock: FakeClock) -> None:
    a, b = await worker(service, "a"), await worker(service, "b")
    await service.claim(a, None, loaded_models=["ckpt-a"])
    [new] = await submit(service, clock, job("ckpt-new"))
    assert await claim_one(service, b, loaded=["ckpt-b"]) == new


async def test_priority_and_stalled_still_come_first(service: JobService, clock: FakeClock) -> None:
    a, b = await worker(service, "a"), await worker(service, "b")
    [stalled] = await submit(service, clock, job("ckpt-z"))
    assert await claim_one(service, a, loaded=["ckpt-z"]) == stalled
    warm_low, cold_high = await submit(service, clock, job("ckpt-b"), job("ckpt-z", priority=5))
    clock.advance(31)  # a's lease runs out: its job is re-queued stalled
    assert await service.expire_leases() == 1
    [warm_new] = await submit(service, clock, job("ckpt-b"))
    order = [await claim_one(service, b, loaded=["ckpt-b"]) for _ in range(4)]
    # stalled first, then priority (cold or not), then the warm ones (by age), nothing left
    assert order == [stalled, cold_high, warm_low, warm_new]


async def test_affinity_off_is_first_come_first_served(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    settings.affinity_enabled = False
    service = JobService(store, settings, clock=clock)
    cold, warm = await submit(service, clock, job("ckpt-b"), job("ckpt-a"))
    w = await worker(service, "w")
    assert await claim_one(service, w, loaded=["ckpt-a"]) == cold


async def test_batch_claim_and_racing_claimers_never_share(
    service: JobService, clock: FakeClock, settings: Settings
) -> None:
    settings.lease_seconds = 300
    requests = [job(f"ckpt-{i % 3}", f"lora-{i % 5}", prompt=f"p{i}") for i in range(30)]
    await service.submit("t1", requests)
    workers = [await worker(service, f"w{i}") for i in range(4)]
    results = await asyncio.gather(
        *(
            service.claim(w, None, max_jobs=5, loaded_models=[f"ckpt-{i % 3}", f"lora:lora-{i}"])
            for i, w in enumerate(workers)
        )
    )
    ids = [j.id for r in results for j in r.jobs]
    assert len(ids) == len(set(ids)) and ids
    clock.advance(31)
    rest = await service.claim(workers[0], None, max_jobs=32, loaded_models=[])
    assert sorted(ids + [j.id for j in rest.jobs]) == sorted({*ids, *(j.id for j in rest.jobs)})
    assert len(ids) + len(rest.jobs) == 30  # aged: everything left goes to anyone, nothing twice


async def test_warm_set_is_persisted_on_the_worker_row(service: JobService, clock: FakeClock) -> None:
    w = await worker(service, "w")
    await service.claim(w, None, loaded_models=["ckpt-a", "lora:x"], cached_models=["ckpt-b"])
    row = await service.store.read(lambda tx: tx.get_worker(w))
    assert row is not None
    assert row.loaded_models == ["ckpt-a", "lora:x"] and row.cached_models == ["ckpt-b"]


def test_warm_names_and_index() -> None:
    assert warm_names(["ckpt", "lora:x", "vae:v", "odd:thing"]) == {"ckpt", "x", "v", "odd:thing"}
    index = WarmIndex()
    index.set("a", frozenset({"m1", "m2"}), frozenset({"m3"}))
    index.set("b", frozenset({"m1"}), frozenset())
    assert sorted(index.elsewhere("b")[0]) == ["m1", "m2"] and index.elsewhere("b")[1] == ["m3"]
    assert index.elsewhere("a") == (["m1"], [])
    index.set("b", frozenset(), frozenset())
    assert index.elsewhere("a") == ([], [])
