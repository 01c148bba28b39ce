"""Metrics are effects applied after a commit (DESIGN.md §2): a transaction that rolls back has
counted nothing. The failure is real — a trigger in the database refuses a later statement of the
use case's transaction, after the use case has gathered its counts — not a mocked store."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sdfleet.config import Settings
from sdfleet.domain import Capabilities, GenerationSpec, JobKind, JobState
from sdfleet.jobs.blobkeys import output_key
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import Completion, JobRequest, OutputReport, Registration
from sdfleet.store import SqlStore
from tests.conftest import FakeClock

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def snapshot(metrics: Metrics) -> Snapshot:
    """Every sample of every metric on the service's registry (counters, histograms, gauges)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


def refuse_inserts(store: SqlStore, table: str) -> None:
    """Make the database refuse every insert into ``table`` (a trigger: the statement fails and
    its whole transaction rolls back)."""
    with store.writer_engine.begin() as conn:
        if store.dialect.is_sqlite:
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_insert() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
                )
            )


@pytest.fixture
def service(store: SqlStore, settings: Settings, clock: FakeClock) -> JobService:
    return JobService(store, settings, clock=clock, metrics=Metrics(CollectorRegistry()))


async def test_a_rolled_back_completion_batch_counts_nothing(service: JobService, clock: FakeClock) -> None:
    spec = GenerationSpec(prompt="a cat", width=64, height=64)
    subs = await service.submit("t1", [JobRequest(kind=JobKind.TXT2IMG, spec=spec) for _ in range(3)])
    w = await service.register_worker("local", Registration(name="w", capabilities=Capabilities()))
    claim = await service.claim(w.id, None, max_jobs=3)
    assert len(claim.jobs) == 3
    clock.advance(5)
    batch = [
        Completion(
            job_id=j.id,
            epoch=j.lease_epoch,
            engine_seconds=1.0,
            outputs=[
                OutputReport(
                    index=0,
                    content_type="image/png",
                    size=10,
                    blob_key=output_key(j, j.lease_epoch, 0, "image/png"),
                )
            ],
        )
        for j in claim.jobs
    ]
    before = snapshot(service.metrics)
    assert before[("sdfleet_jobs_claimed_total", ())] == 3  # the claim counted after its commit
    # the batch's outputs are inserted after every job of it was accepted (and counted)
    refuse_inserts(service.store, "outputs")

    with pytest.raises(DBAPIError, match="refused by the test"):
        await service.complete(w.id, None, batch)

    after = snapshot(service.metrics)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    assert changed == {}, f"a rolled-back completion moved these metrics: {changed}"
    for sub in subs:  # and the batch left no trace in the store either
        job = await service.get_job(sub.job.id, "t1")
        assert job.state == JobState.RUNNING


async def test_a_rolled_back_failure_counts_nothing(service: JobService) -> None:
    spec = GenerationSpec(prompt="a cat", width=64, height=64)
    [sub] = await service.submit("t1", [JobRequest(kind=JobKind.TXT2IMG, spec=spec)])
    w = await service.register_worker("local", Registration(name="w", capabilities=Capabilities()))
    [job] = (await service.claim(w.id, None)).jobs
    before = snapshot(service.metrics)
    # a failure for good counts the failed attempt and the failed job, then writes its webhook
    # message and events: refuse the events
    refuse_inserts(service.store, "events")

    with pytest.raises(DBAPIError, match="refused by the test"):
        await service.fail(w.id, None, job.id, job.lease_epoch, code="oom", message="boom", retryable=False)

    assert snapshot(service.metrics) == before
    assert (await service.get_job(sub.job.id, "t1")).state == JobState.RUNNING
