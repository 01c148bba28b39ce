"""Read-side use cases the routes need: a job's outputs, pages of jobs, a job's events, a tenant's usage,
the fleet's workers, stats and demand, registry look-ups. Each is one read transaction; the routes shape
the answer, never the query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdfleet.domain import (
    Event,
    Job,
    JobKind,
    JobState,
    ModelKind,
    ModelRecord,
    Output,
    WorkerInfo,
    WorkerState,
)
from sdfleet.store import JobStore, SqlTx


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a tenant's jobs (newest first) with each job's outputs."""

    jobs: list[Job]
    outputs: dict[str, list[Output]]


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Queue depth by state, the workers seen lately and, when asked, attempts per minute."""

    by_state: dict[str, int]
    workers: list[WorkerInfo]
    activity: dict[int, dict[str, float]]


@dataclass(frozen=True, slots=True)
class FleetDemand:
    """Per model: queued and running jobs (``demand``), recent waits, and the active workers seen lately."""

    demand: dict[str, dict[str, float]]
    waits: dict[str, list[float]]
    workers: list[WorkerInfo]


class JobQueries:
    """The read-side use cases of the API, over the job store."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def ping(self) -> None:
        """Raise when the database does not answer."""
        await self._store.ping()

    async def get_job(self, job_id: str) -> Job | None:
        """A job by id, any tenant's (callers fence it themselves), or None."""
        return await self._store.read(lambda tx: tx.get_job(job_id))

    async def outputs(self, job_id: str) -> list[Output]:
        """The outputs a job has stored, in the store's order."""
        return await self._store.read(lambda tx: tx.list_outputs(job_id))

    async def job_page(
        self,
        *,
        tenant: str | None,
        states: Sequence[JobState] = (),
        kind: JobKind | None = None,
        label: tuple[str, str] | None = None,
        before: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> JobPage:
        """A page of jobs (``tenant`` None: every tenant's) with their outputs, in one read: the children
        of ``parent``, or the jobs that have no parent."""

        def read(tx: SqlTx) -> JobPage:
            found = tx.list_jobs(
                tenant=tenant,
                states=states,
                kind=kind,
                label=label,
                before=before,
                limit=limit,
                parent=parent,
            )
            return JobPage(jobs=found, outputs=tx.outputs_for_jobs([j.id for j in found]))

        return await self._store.read(read)

    async def events_after(self, job_id: str, after_id: int) -> list[Event]:
        """A job's events after ``after_id`` (0: from the start), oldest first."""
        return await self._store.read(lambda tx: tx.events_after(job_id=job_id, after_id=after_id))

    async def tenant_usage(self, tenant: str) -> dict[str, Any]:
        """A tenant's usage: jobs, images, engine seconds, cost."""
        return await self._store.read(lambda tx: tx.tenant_usage(tenant))

    async def workers(self, *, seen_since: float | None = None) -> list[WorkerInfo]:
        """Registered workers (only those seen since ``seen_since`` when given)."""
        return await self._store.read(lambda tx: tx.list_workers(seen_since=seen_since))

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        """One worker, or None."""
        return await self._store.read(lambda tx: tx.get_worker(worker_id))

    async def stats(self, *, seen_since: float, activity: tuple[float, float] | None = None) -> FleetStats:
        """Jobs by state, workers seen since ``seen_since`` and, for ``activity=(since, until)``, the
        attempts per minute of that window — in one read."""

        def read(tx: SqlTx) -> FleetStats:
            return FleetStats(
                by_state=tx.count_jobs_by_state(),
                workers=tx.list_workers(seen_since=seen_since),
                activity=tx.activity_by_minute(*activity) if activity is not None else {},
            )

        return await self._store.read(read)

    async def demand(self, *, waits_since: float, seen_since: float) -> FleetDemand:
        """Per-model demand, the waits of jobs first handed out since ``waits_since``, and the active
        workers seen since ``seen_since`` — in one read."""

        def read(tx: SqlTx) -> FleetDemand:
            workers = [w for w in tx.list_workers(seen_since=seen_since) if w.state == WorkerState.ACTIVE]
            return FleetDemand(
                demand=tx.model_demand(), waits=tx.recent_model_waits(waits_since), workers=workers
            )

        return await self._store.read(read)

    async def models(self, names: Sequence[str]) -> dict[str, ModelRecord]:
        """Registry entries by name (names not registered are left out); no read for no names."""
        if not names:
            return {}
        return await self._store.read(lambda tx: tx.get_models(names))

    async def models_of_kind(self, *kinds: ModelKind) -> list[list[ModelRecord]]:
        """The registry's entries of each kind asked, in one read."""
        return await self._store.read(lambda tx: [tx.list_models(k) for k in kinds])
