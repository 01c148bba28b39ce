"""Every rule of the job lifecycle (DESIGN.md §3) against a real SQLite store and a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from sdfleet.config import Settings
from sdfleet.domain import Arch, Capabilities, Feature, GenerationSpec, JobKind, JobState, WorkerState
from sdfleet.errors import NotFound, StaleLease, ValidationError
from sdfleet.jobs.blobkeys import output_key
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import Beat, Completion, JobRequest, OutputReport, Registration
from sdfleet.store import SqlStore
from tests.support.clock import FakeClock


@pytest.fixture
def service(store: SqlStore, settings: Settings, clock: FakeClock) -> JobService:
    return JobService(store, settings, clock=clock)


def req(prompt: str = "a cat", **kw: object) -> JobRequest:
    spec_kw: dict[str, object] = {"width": 64, "height": 64}
    spec_kw.update({k: v for k, v in kw.items() if k in GenerationSpec.model_fields})
    other = {k: v for k, v in kw.items() if k not in GenerationSpec.model_fields}
    return JobRequest(kind=JobKind.TXT2IMG, spec=GenerationSpec(prompt=prompt, **spec_kw), **other)  # type: ignore[arg-type]


async def worker(service: JobService, name: str = "w", **caps: object) -> str:
    w = await service.register_worker(
        "local", Registration(name=name, capabilities=Capabilities(**caps), price_per_hour=3.6)
    )  # type: ignore[arg-type]
    return w.id


def completion(
    job_id: str, epoch: int, tenant: str = "t1", n: int = 1, engine_seconds: float = 2.0, seed: int = 0
) -> Completion:
    return Completion(
        job_id=job_id,
        epoch=epoch,
        engine_seconds=engine_seconds,
        outputs=[
            OutputReport(
                index=i,
                content_type="image/png",
                size=10,
                seed=seed + i,
                blob_key=f"outputs/{tenant}/{job_id}/{epoch}-{i}.png",
            )
            for i in range(n)
        ],
    )


async def test_submit_claim_complete_records_outputs_and_cost(service: JobService) -> None:
    [sub] = await service.submit("t1", [req()])
    assert sub.created and sub.job.state == JobState.QUEUED
    w = await worker(service)
    claim = await service.claim(w, None, max_jobs=4)
    assert [j.id for j in claim.jobs] == [sub.job.id]
    job = claim.jobs[0]
    assert job.state == JobState.RUNNING and job.lease_epoch == 1
    [res] = await service.complete(w, None, [completion(job.id, 1, seed=2**32 - 1)])
    assert res.status == "accepted"
    done = await service.get_job(job.id, "t1")
    assert done.state == JobState.SUCCEEDED
    assert done.engine_seconds == pytest.approx(2.0)
    assert done.cost_usd == pytest.approx(2.0 * 3.6 / 3600)
    outs = await service.store.read(lambda tx: tx.list_outputs(job.id))
    usage = await service.store.read(lambda tx: tx.tenant_usage("t1"))
    assert [(o.index, o.seed) for o in outs] == [(0, 2**32 - 1)]  # seeds are unsigned 32-bit
    assert usage["images"] == 1 and usage["cost_usd"] == pytest.approx(0.002)


async def test_output_key_is_fenced_by_epoch(service: JobService) -> None:
    [sub] = await service.submit("t1", [req()])
    w = await worker(service)
    [job] = (await service.claim(w, None)).jobs
    assert output_key(job, 1, 0, "image/png").endswith(f"/{job.id}/1-0.png")
    bad = completion(job.id, 1)
    bad.outputs[0].blob_key = f"outputs/t1/{job.id}/2-0.png"
    with pytest.raises(ValidationError):
        await service.complete(w, None, [bad])


async def test_two_workers_racing_for_one_job(service: JobService) -> None:
    await service.submit("t1", [req()])
    a, b = await worker(service, "a"), await worker(service, "b")
    ra, rb = await asyncio.gather(service.claim(a, None, max_jobs=5), service.claim(b, None, max_jobs=5))
    assert len(ra.jobs) + len(rb.jobs) == 1


async def test_many_claimers_never_share_a_job(service: JobService) -> None:
    await service.submit("t1", [req(f"p{i}") for i in range(60)])
    workers = [await worker(service, f"w{i}") for i in range(8)]
    results = await asyncio.gather(*(service.claim(w, None, max_jobs=10) for w in workers))
    ids = [j.id for r in results for j in r.jobs]
    assert len(ids) == len(set(ids)) == 60


async def test_stale_epoch_completion_is_409_and_changes_nothing(
    service: JobService, clock: FakeClock
) -> None:
    [sub] = await service.submit("t1", [req()])
    a, b = await worker(service, "a"), await worker(service, "b")
    [job_a] = (await service.claim(a, None)).jobs
    clock.advance(31)  # a's lease runs out
    assert await service.expire_leases() == 1
    [job_b] = (await service.claim(b, None)).jobs
    assert job_b.id == job_a.id and job_b.lease_epoch == 2
    [late] = await service.complete(a, None, [completion(job_a.id, 1)])
    assert late.status == "stale"
    with pytest.raises(StaleLease):
        await service.fail(a, None, job_a.id, 1, code="x", message="late", retryable=True)
    job = await service.get_job(sub.job.id, None)
    assert job.state == JobState.RUNNING and job.lease_worker == b and job.failures == 0
    assert await service.store.read(lambda tx: tx.list_outputs(job.id)) == []
    [ok] = await service.complete(b, None, [completion(job_b.id, 2)])
    assert ok.status == "accepted"
    [again] = await service.complete(b, None, [completion(job_b.id, 2)])
    assert again.status == "duplicate"
    assert len(await service.store.read(lambda tx: tx.list_outputs(job.id))) == 1


async def test_lease_expiry_requeues_ahead_of_new_work(service: JobService, clock: FakeClock) -> None:
    [old] = await service.submit("t1", [req("old")])
    a = await worker(service, "a")
    await service.claim(a, None)
    clock.advance(1)
    await service.submit("t1", [req(f"new{i}") for i in range(3)])
    clock.advance(40)
    b = await worker(service, "b")
    # the claim itself notices the expired lease, no reaper pass needed
    [first] = (await service.claim(b, None)).jobs
    assert first.id == old.job.id
    job = await service.get_job(old.job.id, None)
    assert job.interruptions == 1 and job.failures == 0
    attempts = await service.store.read(lambda tx: tx.list_attempts(old.job.id))
    assert [a_.outcome.value for a_ in attempts] == ["interrupted", "running"]


async def test_heartbeat_extends_lease_and_reports_progress(service: JobService, clock: FakeClock) -> None:
    await service.submit("t1", [req()])
    w = await worker(service)
    [job] = (await service.claim(w, None)).jobs
    for _ in range(5):
        clock.advance(20)
        answers, state = await service.heartbeat(w, None, [Beat(job.id, job.lease_epoch, 3, 20)])
        assert answers[0].action == "continue" and state == WorkerState.ACTIVE
    assert await service.expire_leases() == 0
    current = await service.get_job(job.id, None)
    assert current.state == JobState.RUNNING and current.progress_step == 3 and current.progress_total == 20


async def test_late_heartbeat_keeps_a_job_nobody_took(service: JobService, clock: FakeClock) -> None:
    await service.submit("t1", [req()])
    w = await worker(service)
    [job] = (await service.claim(w, None)).jobs
    clock.advance(31)
    await service.expire_leases()
    answers, _ = await service.heartbeat(w, None, [Beat(job.id, 1, 5, 10)])
    assert answers[0].action == "continue"
    assert (await service.get_job(job.id, None)).state == JobState.RUNNING
    [res] = await service.complete(w, None, [completion(job.id, 1)])
    assert res.status == "accepted"


async def test_failed_job_goes_to_another_worker_never_back(service: JobService) -> None:
    [sub] = await service.submit("t1", [req()])
    a, b = await worker(service, "a"), await worker(service, "b")
    [job] = (await service.claim(a, None)).jobs
    after = await service.fail(
        a, None, job.id, job.lease_epoch, code="oom", message="CUDA OOM", retryable=True
    )
    assert after.state == JobState.QUEUED and after.failures == 1
    assert (await service.claim(a, None)).jobs == []
    [again] = (await service.claim(b, None)).jobs
    assert again.id == sub.job.id and again.lease_epoch == 2


async def test_retry_budget_then_failed(service: JobService, settings: Settings) -> None:
    [sub] = await service.submit("t1", [req()])
    ws = [await worker(service, f"w{i}") for i in range(settings.max_failures)]
    reasons = ["the GPU fell off the bus", "driver crashed", "disk full"]  # not the same failure twice
    for i, w in enumerate(ws):
        [job] = (await service.claim(w, None)).jobs
        after = await service.fail(
            w, None, job.id, job.lease_epoch, code="boom", message=reasons[i % 3], retryable=True
        )
    assert after.state == JobState.FAILED and after.failures == settings.max_failures
    assert after.error_code == "boom"


async def test_fatal_failure_ends_the_job(service: JobService) -> None:
    await service.submit("t1", [req()])
    w = await worker(service)
    [job] = (await service.claim(w, None)).jobs
    after = await service.fail(w, None, job.id, 1, code="bad_prompt", message="nope", retryable=False)
    assert after.state == JobState.FAILED and "not retryable" in (after.error_message or "")


async def test_release_is_an_interruption_not_a_failure(service: JobService, settings: Settings) -> None:
    [sub] = await service.submit("t1", [req()])
    w = await worker(service)
    for i in range(settings.max_interruptions):
        [job] = (await service.claim(w, None)).jobs
        after = await service.release(w, None, job.id, job.lease_epoch, reason="SIGTERM")
        assert after.state == JobState.QUEUED and after.failures == 0 and after.interruptions == i + 1
    [job] = (await service.claim(w, None)).jobs  # released jobs may come back to the same worker
    after = await service.release(w, None, job.id, job.lease_epoch)
    assert after.state == JobState.FAILED and after.error_code == "too_many_interruptions"


async def test_quarantine_refunds_failures(service: JobService, settings: Settings) -> None:
    subs = await service.submit("t1", [req(f"p{i}") for i in range(settings.quarantine_failures + 1)])
    bad, good = await worker(service, "bad"), await worker(service, "good")
    # the bad node first fails one job fatally, then others retryably
    [j0] = (await service.claim(bad, None)).jobs
    assert (
        await service.fail(bad, None, j0.id, 1, code="x", message="broken", retryable=False)
    ).state == JobState.FAILED
    for _ in range(settings.quarantine_failures - 1):
        [j] = (await service.claim(bad, None)).jobs
        await service.fail(bad, None, j.id, j.lease_epoch, code="x", message="broken", retryable=True)
    claim = await service.claim(bad, None)
    assert claim.jobs == [] and claim.worker_state == WorkerState.QUARANTINED
    for s in subs:
        job = await service.get_job(s.job.id, None)
        assert job.failures == 0
        assert job.state == JobState.QUEUED
    # every job now runs on the good worker
    got = (await service.claim(good, None, max_jobs=10)).jobs
    assert {j.id for j in got} == {s.job.id for s in subs}
    info = await service.store.read(lambda tx: tx.get_worker(bad))
    assert info is not None and info.quarantine_reason and "broken" in info.quarantine_reason


async def test_quarantine_lifts_after_its_time(
    service: JobService, settings: Settings, clock: FakeClock
) -> None:
    await service.submit("t1", [req(f"p{i}") for i in range(settings.quarantine_failures)])
    bad = await worker(service, "bad")
    for _ in range(settings.quarantine_failures):
        [j] = (await service.claim(bad, None)).jobs
        await service.fail(bad, None, j.id, j.lease_epoch, code="x", message="broken", retryable=True)
    clock.advance(settings.quarantine_seconds + 1)
    assert await service.lift_quarantines() == 1
    assert (await service.claim(bad, None)).worker_state == WorkerState.ACTIVE


async def test_cancel_queued_and_running(service: JobService) -> None:
    a, b = await service.submit("t1", [req("a"), req("b")])
    w = await worker(service)
    [running] = (await service.claim(w, None)).jobs
    queued_id = b.job.id if running.id == a.job.id else a.job.id
    assert (await service.cancel(queued_id, "t1")).state == JobState.CANCELED
    after = await service.cancel(running.id, "t1")
    assert after.state == JobState.RUNNING and after.cancel_requested
    answers, _ = await service.heartbeat(w, None, [Beat(running.id, running.lease_epoch, 1, 10)])
    assert answers[0].action == "cancel"
    done = await service.fail(
        w, None, running.id, running.lease_epoch, code="canceled", message="stopped", retryable=False
    )
    assert done.state == JobState.CANCELED
    with pytest.raises(NotFound):
        await service.cancel(running.id, "someone-else")


async def test_idempotent_resubmit(service: JobService) -> None:
    [first] = await service.submit("t1", [req(idempotency_key="k1")])
    [again] = await service.submit("t1", [req("different", idempotency_key="k1")])
    assert not again.created and again.job.id == first.job.id
    [other_tenant] = await service.submit("t2", [req(idempotency_key="k1")])
    assert other_tenant.created and other_tenant.job.id != first.job.id
    with pytest.raises(ValidationError):
        await service.submit("t1", [req(idempotency_key="dup"), req(idempotency_key="dup")])


async def test_capability_matching(service: JobService) -> None:
    [xl] = await service.submit("t1", [req("xl", arch=Arch.SDXL.value)])
    [big] = await service.submit("t1", [req("big", width=1024, height=1024, batch_size=4)])
    [lora] = await service.submit("t1", [req("lora", loras=[{"name": "x"}])])
    small = await worker(service, "small", archs=("sd1",), max_pixels=512 * 512 * 2)
    assert (await service.claim(small, None, max_jobs=10)).jobs == []
    capable = await worker(service, "capable", features=Feature.LORA)
    got = {j.id for j in (await service.claim(capable, None, max_jobs=10)).jobs}
    assert got == {xl.job.id, big.job.id, lora.job.id}


async def test_unservable_job_says_why_then_expires(
    service: JobService, settings: Settings, clock: FakeClock
) -> None:
    [xl] = await service.submit("t1", [req("xl", arch="sdxl")])
    await worker(service, "sd1-only", archs=("sd1",))
    await service.check_unservable()
    job = await service.get_job(xl.job.id, None)
    assert job.state == JobState.QUEUED
    assert job.wait_reason and "SDXL" in job.wait_reason and "cannot run SDXL" in job.wait_reason
    clock.advance(settings.unservable_after + 1)
    assert await service.check_unservable() == 1
    job = await service.get_job(xl.job.id, None)
    assert job.state == JobState.FAILED and job.error_code == "expired"


async def test_servable_job_is_not_expired(service: JobService, settings: Settings, clock: FakeClock) -> None:
    [sub] = await service.submit("t1", [req()])
    await worker(service)
    clock.advance(settings.unservable_after + 1)
    await service.heartbeat(await worker(service, "fresh"), None, [])
    assert await service.check_unservable() == 0
    assert (await service.get_job(sub.job.id, None)).state == JobState.QUEUED


async def test_priority_order(service: JobService) -> None:
    low, high = await service.submit("t1", [req("low"), req("high", priority=10)])
    w = await worker(service)
    [first] = (await service.claim(w, None)).jobs
    assert first.id == high.job.id


async def test_long_poll_claim_wakes_on_submit(service: JobService) -> None:
    w = await worker(service)
    waiter = asyncio.create_task(service.claim(w, None, wait=5))
    await asyncio.sleep(0.05)
    [sub] = await service.submit("t1", [req()])
    result = await asyncio.wait_for(waiter, 2)
    assert [j.id for j in result.jobs] == [sub.job.id]


async def test_tenant_cannot_see_other_tenant_job(service: JobService) -> None:
    [sub] = await service.submit("t1", [req()])
    with pytest.raises(NotFound):
        await service.get_job(sub.job.id, "t2")
    assert (await service.get_job(sub.job.id, None)).id == sub.job.id


async def test_label_filter_pages_are_full(service: JobService) -> None:
    tagged = await service.submit("t1", [req(f"a{i}", labels={"run": "x"}) for i in range(5)])
    await service.submit("t1", [req(f"b{i}", labels={"run": "y"}) for i in range(20)])
    page = await service.store.read(lambda tx: tx.list_jobs(tenant="t1", label=("run", "x"), limit=3))
    assert len(page) == 3
    rest = await service.store.read(
        lambda tx: tx.list_jobs(tenant="t1", label=("run", "x"), before=page[-1].id, limit=3)
    )
    assert {j.id for j in page + rest} == {s.job.id for s in tagged}
    assert await service.store.read(lambda tx: tx.list_jobs(tenant="t1", label=("nope", "x"))) == []
