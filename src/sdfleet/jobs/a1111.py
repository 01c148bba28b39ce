"""The A1111 bookkeeping use cases: each tenant's stored options (A1111's ``/options``), and the task ids
A1111 clients follow a request by (``force_task_id``), mapped to the jobs they run as."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdfleet.a1111.catalog import Catalog
from sdfleet.domain import Job, ModelKind
from sdfleet.store import JobStore, SqlTx


class A1111Service:
    """A tenant's A1111 options and task ids, over the job store. ``retention_seconds`` bounds how long a
    finished task id is remembered (the events' retention)."""

    def __init__(self, store: JobStore, *, clock: Callable[[], float], retention_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._retention = retention_seconds

    async def catalog(self) -> Catalog:
        """The registry's checkpoints and VAEs, as A1111's model lists see them (one read)."""

        def read(tx: SqlTx) -> Catalog:
            return Catalog(
                checkpoints=tx.list_models(ModelKind.CHECKPOINT),
                vaes=tx.list_models(ModelKind.VAE),
                upscalers=tx.list_models(ModelKind.UPSCALER),
                face_restorers=tx.list_models(ModelKind.FACE_RESTORER),
                controlnets=[*tx.list_models(ModelKind.CONTROLNET), *tx.list_models(ModelKind.IP_ADAPTER)],
            )

        return await self._store.read(read)

    async def options(self, tenant: str) -> dict[str, Any]:
        """The options this tenant set (not A1111's defaults)."""
        return await self._store.read(lambda tx: tx.get_a1111_options(tenant))

    async def merge_options(self, tenant: str, updates: dict[str, Any]) -> None:
        """Set some of the tenant's options, keeping the others."""
        now = self._clock()
        await self._store.write(lambda tx: tx.merge_a1111_options(tenant, updates, now))

    async def record_task(self, tenant: str, task_id: str, job_id: str) -> None:
        """Remember that ``task_id`` runs as ``job_id`` (a reused id points to the newest job), forgetting
        the tenant's task ids past retention."""
        now = self._clock()
        prune_before = now - self._retention
        await self._store.write(lambda tx: tx.record_a1111_task(tenant, task_id, job_id, now, prune_before))

    async def finish_task(self, tenant: str, task_id: str, job_id: str) -> None:
        """The request of ``task_id`` has answered: it is no longer the tenant's active one."""
        await self._store.write(lambda tx: tx.finish_a1111_task(tenant, task_id, job_id))

    async def task_job(self, tenant: str, task_id: str) -> Job | None:
        """The job a task id of this tenant runs as, or None."""
        return await self._store.read(lambda tx: tx.get_a1111_task(tenant, task_id))

    async def active_tasks(self, tenant: str) -> list[tuple[str, Job]]:
        """The tenant's requests still waiting for an answer: ``(task id, job)`` pairs."""
        return await self._store.read(lambda tx: tx.active_a1111_tasks(tenant))
