"""``SqlTx.activity_by_minute`` (the fleet page's charts): attempts that ended, bucketed by minute in
SQL, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from sdfleet.config import Settings
from sdfleet.domain import Capabilities, GenerationSpec, JobKind
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import Completion, JobRequest, OutputReport, Registration
from sdfleet.store import SqlStore
from tests.support.clock import FakeClock

PRICE = 3.6  # USD per hour: one engine second costs 0.001


def completion(job_id: str, epoch: int, images: int, engine_seconds: float) -> Completion:
    return Completion(
        job_id=job_id,
        epoch=epoch,
        engine_seconds=engine_seconds,
        outputs=[
            OutputReport(
                index=i,
                content_type="image/png",
                size=10,
                seed=i,
                blob_key=f"outputs/t/{job_id}/{epoch}-{i}.png",
            )
            for i in range(images)
        ],
    )


async def test_activity_is_counted_per_minute(store: SqlStore, settings: Settings, clock: FakeClock) -> None:
    service = JobService(store, settings, clock=clock)
    start = clock.now  # a whole minute
    assert start % 60 == 0
    spec = GenerationSpec(prompt="x", width=64, height=64)
    await service.submit("t", [JobRequest(kind=JobKind.TXT2IMG, spec=spec) for _ in range(3)])
    worker = await service.register_worker(
        "local", Registration(name="w", capabilities=Capabilities(), price_per_hour=PRICE)
    )

    clock.advance(5)  # minute 0: one job, two images, 2 engine seconds
    [job] = (await service.claim(worker.id, None)).jobs
    clock.advance(5)
    await service.complete(worker.id, None, [completion(job.id, job.lease_epoch, 2, 2.0)])

    clock.advance(60)  # minute 1: a retryable failure after 1 engine second
    [job] = (await service.claim(worker.id, None)).jobs
    await service.fail(
        worker.id, None, job.id, job.lease_epoch, code="oom", message="x", retryable=True, engine_seconds=1.0
    )

    clock.advance(65)  # minute 2: one image, 3 engine seconds
    [job] = (await service.claim(worker.id, None)).jobs
    await service.complete(worker.id, None, [completion(job.id, job.lease_epoch, 1, 3.0)])

    activity = await store.read(lambda tx: tx.activity_by_minute(start, start + 3600))
    assert sorted(activity) == [0, 1, 2]
    assert activity[0] == pytest.approx(
        {"succeeded": 1, "failed": 0, "images": 2, "engine_seconds": 2.0, "cost_usd": 0.002}
    )
    assert activity[1] == pytest.approx(
        {"succeeded": 0, "failed": 1, "images": 0, "engine_seconds": 1.0, "cost_usd": 0.001}
    )
    assert activity[2] == pytest.approx(
        {"succeeded": 1, "failed": 0, "images": 1, "engine_seconds": 3.0, "cost_usd": 0.003}
    )

    # The window is half-open and minutes count from its start.
    later = await store.read(lambda tx: tx.activity_by_minute(start + 60, start + 120))
    assert list(later) == [0]
    assert later[0]["failed"] == 1


async def test_no_workers_no_activity(store: SqlStore) -> None:
    assert await store.read(lambda tx: tx.activity_by_minute(0.0, 3600.0)) == {}
