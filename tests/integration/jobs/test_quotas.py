"""Quotas and rate limits per tenant (token buckets in the job store, debited in the submit's
transaction), weighted fair share between tenants in claims, and the head of the queue at most once
per job. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from sdfleet.config import Quotas, Settings
from sdfleet.domain import Capabilities, GenerationSpec, JobKind, JobState
from sdfleet.errors import LimitExceeded, RateLimited
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import Completion, JobRequest, Registration
from sdfleet.store import SqlStore, SqlTx
from tests.support.clock import FakeClock


def req(prompt: str = "a cat", *, priority: int = 0, steps: int = 20, size: int = 64) -> JobRequest:
    spec = GenerationSpec(prompt=prompt, width=size, height=size, steps=steps)
    return JobRequest(kind=JobKind.TXT2IMG, spec=spec, priority=priority)


def make(store: SqlStore, settings: Settings, clock: FakeClock, **quotas: object) -> JobService:
    settings.quotas = Quotas(**quotas)  # type: ignore[arg-type]
    return JobService(store, settings, clock=clock)


async def count_jobs(store: SqlStore, tenant: str) -> int:
    return await store.read(lambda tx: tx.count_live_jobs(tenant))


async def worker(service: JobService, name: str = "w") -> str:
    w = await service.register_worker("local", Registration(name=name, capabilities=Capabilities()))
    return w.id


# ===================================================================== rate, burst, all-or-nothing


async def test_rate_bucket_refuses_with_retry_after_and_refills(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock, rate=0.5, burst=3, max_concurrent=None)
    for i in range(3):
        await service.submit("t1", [req(f"p{i}")])
    with pytest.raises(RateLimited) as refused:
        await service.submit("t1", [req("one too many")])
    assert refused.value.status == 429 and refused.value.details["limit"] == "rate"
    assert refused.value.headers["Retry-After"] == "2"  # one job at 0.5/s
    assert refused.value.headers["RateLimit-Limit"] == "3"
    assert refused.value.headers["RateLimit-Remaining"] == "0"
    assert await count_jobs(store, "t1") == 3
    await service.submit("t2", [req("another tenant has its own bucket")])
    clock.advance(2.0)
    await service.submit("t1", [req("refilled")])
    assert await count_jobs(store, "t1") == 4


async def test_a_batch_is_charged_whole_or_not_at_all(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock, rate=1, burst=5, max_concurrent=None)
    await service.submit("t1", [req(f"a{i}") for i in range(3)])
    with pytest.raises(RateLimited):
        await service.submit("t1", [req(f"b{i}") for i in range(3)])  # 2 left: none of the 3 stored
    assert await count_jobs(store, "t1") == 3
    await service.submit("t1", [req(f"c{i}") for i in range(2)])
    with pytest.raises(LimitExceeded, match="burst is 5"):  # never fits: 422, not a retry
        await service.submit("t1", [req(f"d{i}") for i in range(6)])
    assert await count_jobs(store, "t1") == 5


async def test_idempotent_resubmits_cost_nothing(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock, rate=1, burst=1, max_concurrent=None)
    first = req("once")
    first.idempotency_key = "k1"
    [a] = await service.submit("t1", [first])
    [b] = await service.submit("t1", [first])
    assert a.job.id == b.job.id and not b.created


# ===================================================================== concurrency, GPU seconds, size


async def test_concurrency_counts_queued_and_running(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock, rate=None, max_concurrent=2)
    subs = await service.submit("t1", [req("a"), req("b")])
    w = await worker(service)
    await service.claim(w, None)  # one running, one queued: still 2 live
    with pytest.raises(RateLimited) as refused:
        await service.submit("t1", [req("c")])
    assert refused.value.details == {"limit": "max_concurrent", "allowed": 2, "live": 2}
    assert "Retry-After" in refused.value.headers
    [queued] = [s.job.id for s in subs if (await service.get_job(s.job.id, None)).state == JobState.QUEUED]
    await service.cancel(queued, None)
    await service.submit("t1", [req("c")])


async def test_gpu_budget_and_largest_job_are_priced_by_size(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    # 64×64 × 20 steps = 0.08192 megapixel-steps; at 10 s each: 0.8192 GPU s per job
    service = make(
        store,
        settings,
        clock,
        rate=None,
        max_concurrent=None,
        gpu_seconds_per_day=2.0,
        max_job_gpu_seconds=5.0,
        default_seconds_per_mpix_step=10.0,
    )
    with pytest.raises(LimitExceeded) as too_big:
        await service.submit("t1", [req("huge", size=512)])  # 5.2 MP-steps: 52 GPU s
    assert too_big.value.details["limit"] == "max_job_gpu_seconds" and too_big.value.field == "params"
    await service.submit("t1", [req("a"), req("b")])
    with pytest.raises(RateLimited) as refused:
        await service.submit("t1", [req("c")])
    assert refused.value.details["limit"] == "gpu_seconds_per_day"
    wait = int(refused.value.headers["Retry-After"])
    assert 19_000 < wait < 20_500  # 0.458 GPU s missing, refilled at 2 s per day
    assert await count_jobs(store, "t1") == 2
    status = await service.quota_status("t1")
    assert status["gpu_seconds"]["available"] == pytest.approx(2.0 - 2 * 0.8192, abs=1e-3)


async def test_a_job_canceled_before_it_ran_gives_its_gpu_charge_back(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(
        store,
        settings,
        clock,
        rate=None,
        max_concurrent=None,
        gpu_seconds_per_day=2.0,
        default_seconds_per_mpix_step=10.0,
    )
    [a], [b] = await service.submit("t1", [req("a")]), await service.submit("t1", [req("b")])
    assert a.job.gpu_charge == pytest.approx(0.8192)
    with pytest.raises(RateLimited):
        await service.submit("t1", [req("c")])
    await service.cancel(b.job.id, "t1")  # still queued: its 0.82 s come back, "c" fits now
    status = await service.quota_status("t1")
    assert status["gpu_seconds"]["available"] == pytest.approx(2.0 - 0.8192, abs=1e-3)
    await service.submit("t1", [req("c")])
    # a job a worker started keeps its charge when canceled: the GPU ran it
    w = await worker(service)
    [held] = (await service.claim(w, None)).jobs
    assert held.id == a.job.id
    await service.cancel(held.id, "t1")
    clock.advance(1.0)
    status = await service.quota_status("t1")
    assert status["gpu_seconds"]["available"] == pytest.approx(2.0 - 2 * 0.8192, abs=1e-3)


async def test_admin_limits_override_defaults_and_reset_the_bucket(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    from sdfleet.jobs.quotas import DEFAULT

    service = make(store, settings, clock, rate=1, burst=1, max_concurrent=None)
    await service.submit("t1", [req("a")])
    with pytest.raises(RateLimited):
        await service.submit("t1", [req("b")])
    limits = await service.set_tenant_limits("t1", {"burst": 10, "max_concurrent": 3})
    assert (
        limits.burst == 10
        and limits.max_concurrent == 3
        and set(limits.overrides) == {"burst", "max_concurrent"}
    )
    await service.submit("t1", [req("b"), req("c")])  # a new limit starts full; 3 live now
    with pytest.raises(RateLimited, match="limit is 3"):
        await service.submit("t1", [req("d")])
    limits = await service.set_tenant_limits("t1", {"max_concurrent": DEFAULT})
    assert limits.max_concurrent is None and set(limits.overrides) == {"burst"}
    status = await service.quota_status("t1")
    assert status["rate"]["available"] == 10 and status["concurrent"] == {
        "limit": None,
        "live": 3,
        "available": None,
    }


async def test_disabled_quotas_charge_nothing(store: SqlStore, settings: Settings, clock: FakeClock) -> None:
    service = make(store, settings, clock, enabled=False, rate=1, burst=1)
    await service.submit("t1", [req("a"), req("b")])
    assert await count_jobs(store, "t1") == 2


# ===================================================================== fair share


async def claim_done(service: JobService, w: str) -> str:
    """One claim of one job, completed at once (a single worker working through the queue)."""
    [job] = (await service.claim(w, None)).jobs
    await service.complete(w, None, [Completion(job.id, job.lease_epoch, outputs=[])])
    return job.tenant


async def test_one_tenants_backlog_does_not_starve_anothers_single_job(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock)
    for batch in range(2):
        await service.submit("a", [req(f"a{batch}-{i}") for i in range(1000)])
    clock.advance(1)
    [b] = await service.submit("b", [req("b's only job")])
    w = await worker(service)
    served = [await claim_done(service, w) for _ in range(3)]
    assert "b" in served[:2], served
    assert (await service.get_job(b.job.id, None)).state == JobState.SUCCEEDED


async def test_fair_window_and_running_jobs_count(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock)
    await service.submit("a", [req(f"a{i}") for i in range(200)])
    clock.advance(1)
    await service.submit("b", [req(f"b{i}") for i in range(3)])
    w = await worker(service)
    got = (await service.claim(w, None, max_jobs=4)).jobs
    assert sorted(j.tenant for j in got) == ["a", "a", "b", "b"]  # interleaved within one claim
    got = (await service.claim(w, None, max_jobs=1)).jobs + (await service.claim(w, None, max_jobs=1)).jobs
    assert sorted(j.tenant for j in got) == ["a", "b"]  # b's last job is not left behind a's 198


async def test_weights_share_claims_and_priority_orders_within_a_tenant(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock)
    await service.set_tenant_limits("a", {"weight": 3})
    await service.submit("a", [req(f"a{i}") for i in range(60)])
    urgent = await service.submit("a", [req("a urgent", priority=5)])
    await service.submit("b", [req(f"b{i}") for i in range(60)])
    w = await worker(service)
    [first] = (await service.claim(w, None)).jobs
    assert first.id == urgent[0].job.id  # a goes first (weight) and its priority job leads
    await service.complete(w, None, [Completion(first.id, first.lease_epoch, outputs=[])])
    served = [await claim_done(service, w) for _ in range(40)]
    assert 27 <= served.count("a") <= 33, served


# ===================================================================== the head of the queue once


async def test_a_job_jumps_the_queue_at_most_once(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock)
    [older] = await service.submit("t1", [req("older")])
    clock.advance(1)
    [poison] = await service.submit("t1", [req("keeps losing its worker", priority=0)])
    w = await worker(service)

    async def lose(job_id: str) -> None:
        """Claim the job (it is first in line) and let its lease run out."""
        await store.write(lambda tx: tx.update_job(older.job.id, priority=-1))  # poison first, normally
        [job] = (await service.claim(w, None)).jobs
        assert job.id == job_id
        await store.write(lambda tx: tx.update_job(older.job.id, priority=0))
        clock.advance(settings.lease_seconds + 1)
        assert await service.expire_leases() == 1

    await lose(poison.job.id)
    assert (await service.get_job(poison.job.id, None)).stalled  # its first time: head of the queue
    [job] = (await service.claim(w, None)).jobs
    assert job.id == poison.job.id
    clock.advance(settings.lease_seconds + 1)
    assert await service.expire_leases() == 1
    again = await service.get_job(poison.job.id, None)
    assert again.state == JobState.QUEUED and not again.stalled  # not twice
    [job] = (await service.claim(w, None)).jobs
    assert job.id == older.job.id  # by age now


async def test_refunded_failures_do_not_put_a_job_first_again(
    store: SqlStore, settings: Settings, clock: FakeClock
) -> None:
    service = make(store, settings, clock)
    subs = await service.submit("t1", [req(f"p{i}") for i in range(settings.quarantine_failures)])

    async def quarantine_a_worker(name: str) -> None:
        bad = await worker(service, name)
        for _ in range(settings.quarantine_failures):
            [j] = (await service.claim(bad, None)).jobs
            await service.fail(
                bad,
                None,
                j.id,
                j.lease_epoch,
                code="x",
                message="broken " + ("one" if name == "bad1" else "two"),
                retryable=False,
            )

    await quarantine_a_worker("bad1")
    jobs = [await service.get_job(s.job.id, None) for s in subs]
    assert all(j.state == JobState.QUEUED and j.stalled for j in jobs)  # refunded: first in line, once
    await quarantine_a_worker("bad2")
    jobs = [await service.get_job(s.job.id, None) for s in subs]
    assert all(j.state == JobState.QUEUED and not j.stalled for j in jobs)

    def jumped(tx: SqlTx) -> list[bool]:
        return [tx.has_jumped(s.job.id) for s in subs]

    assert await store.read(jumped) == [True] * len(subs)
