"""Transaction statements of the A1111-compatible API: per-tenant A1111 settings and the task ids
of A1111 requests; see :mod:`sdfleet.api.routes.a1111` (a mixin of :class:`sdfleet.store.tx.SqlTx`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, false, insert, or_, select, update
from sqlalchemy.engine import Connection

from sdfleet.domain import Job, JobState
from sdfleet.store.dialect import Dialect
from sdfleet.store.rows import dumps, job_from_row, loads
from sdfleet.store.schema import a1111_options, a1111_tasks, jobs


class A1111Statements:
    """A1111 settings and task ids, per tenant. Runs on the transaction's connection."""

    conn: Connection
    dialect: Dialect

    def get_a1111_options(self, tenant: str) -> dict[str, Any]:
        """The A1111 settings a tenant has set (``POST /sdapi/v1/options``); empty when none."""
        row = self.conn.execute(
            select(a1111_options.c.options).where(a1111_options.c.tenant == tenant)
        ).first()
        value = loads(row[0], {}) if row else {}
        return value if isinstance(value, dict) else {}

    def merge_a1111_options(self, tenant: str, updates: dict[str, Any], now: float) -> dict[str, Any]:
        """Merge ``updates`` into the tenant's A1111 settings (locking its row); returns the result."""
        row = self.conn.execute(
            self.dialect.locked(select(a1111_options.c.options).where(a1111_options.c.tenant == tenant), True)
        ).first()
        current = loads(row[0], {}) if row else {}
        merged = {**(current if isinstance(current, dict) else {}), **updates}
        if row is None:
            self.conn.execute(
                insert(a1111_options).values(tenant=tenant, options=dumps(merged), updated_at=now)
            )
        else:
            self.conn.execute(
                update(a1111_options)
                .where(a1111_options.c.tenant == tenant)
                .values(options=dumps(merged), updated_at=now)
            )
        return merged

    def record_a1111_task(
        self, tenant: str, task_id: str, job_id: str, now: float, prune_before: float
    ) -> None:
        """Remember which job an A1111 request's task id runs as (a reused id points to the newest job),
        and forget the tenant's task ids older than ``prune_before``."""
        self.conn.execute(
            delete(a1111_tasks).where(
                a1111_tasks.c.tenant == tenant,
                or_(a1111_tasks.c.task_id == task_id, a1111_tasks.c.created_at < prune_before),
            )
        )
        self.conn.execute(
            insert(a1111_tasks).values(tenant=tenant, task_id=task_id, job_id=job_id, created_at=now)
        )

    def finish_a1111_task(self, tenant: str, task_id: str, job_id: str) -> None:
        """Mark an A1111 request answered (it no longer counts as the tenant's current request)."""
        self.conn.execute(
            update(a1111_tasks)
            .where(
                a1111_tasks.c.tenant == tenant,
                a1111_tasks.c.task_id == task_id,
                a1111_tasks.c.job_id == job_id,
            )
            .values(done=True)
        )

    def get_a1111_task(self, tenant: str, task_id: str) -> Job | None:
        """The job of one of the tenant's A1111 task ids."""
        row = self.conn.execute(
            select(jobs)
            .join(a1111_tasks, a1111_tasks.c.job_id == jobs.c.id)
            .where(a1111_tasks.c.tenant == tenant, a1111_tasks.c.task_id == task_id)
        ).first()
        return job_from_row(row) if row else None

    def active_a1111_tasks(self, tenant: str, limit: int = 100) -> list[tuple[str, Job]]:
        """The tenant's unanswered A1111 requests whose jobs are queued or running, as (task id, job),
        oldest first (read through ``ix_a1111_tasks_tenant_done``: only requests in flight)."""
        rows = self.conn.execute(
            select(a1111_tasks.c.task_id, jobs)
            .join(jobs, jobs.c.id == a1111_tasks.c.job_id)
            .where(
                a1111_tasks.c.tenant == tenant,
                a1111_tasks.c.done == false(),
                jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
            )
            .order_by(jobs.c.id)
            .limit(limit)
        )
        return [(r._mapping["task_id"], job_from_row(r)) for r in rows]
