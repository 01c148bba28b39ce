"""The one SQL implementation of the job store, for SQLite and PostgreSQL (SQLAlchemy Core, async).

A :class:`SqlStore` hands out transactions (:class:`SqlTx`); every method of a transaction is one
or a few statements. The use cases in :mod:`sdfleet.jobs` compose them so that a state change, its
attempt record, its events and its webhook messages commit together or not at all.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Float,
    Update,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from sdfleet.domain import (
    Attempt,
    AttemptOutcome,
    Capabilities,
    Event,
    EventType,
    Feature,
    Job,
    JobKind,
    JobState,
    ModelKind,
    ModelRecord,
    Output,
    Requirements,
    WorkerInfo,
)
from sdfleet.errors import ServiceUnavailable
from sdfleet.store.claim import FEATURE_MASK, claim_statement, recent_use
from sdfleet.store.dialect import Dialect, dialect_for
from sdfleet.store.records import (
    Affinity,
    ApiKeyRecord,
    Buckets,
    CompletedJob,
    LeaseAnswer,
    OutboxMessage,
    Tenant,
)
from sdfleet.store.rows import (
    JOB_JSON_COLUMNS,
    WORKER_JSON_COLUMNS,
    api_key_from_row,
    attempt_from_row,
    dumps,
    encode,
    event_from_row,
    job_from_row,
    job_row,
    loads,
    model_from_row,
    outbox_from_row,
    output_from_row,
    tenant_from_row,
    worker_from_row,
)
from sdfleet.store.schema import (
    a1111_options,
    a1111_tasks,
    api_keys,
    attempts,
    events,
    job_models,
    jobs,
    models,
    outputs,
    tenants,
    webhook_outbox,
    workers,
)

T = TypeVar("T")


_COMPLETE_JOB = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("k_id"),
        jobs.c.lease_epoch == bindparam("k_epoch"),
        or_(jobs.c.state == JobState.RUNNING.value, jobs.c.state == JobState.QUEUED.value),
    )
    .values(
        state=JobState.SUCCEEDED.value,
        finished_at=bindparam("k_now"),
        updated_at=bindparam("k_now"),
        lease_expires_at=None,
        stalled=False,
        progress_step=bindparam("k_step"),
        engine_seconds=bindparam("k_engine_total"),
        cost_usd=bindparam("k_cost_total"),
        wait_reason=None,
        result=bindparam("k_result"),
        error_code=None,
        error_message=None,
    )
)
_COMPLETE_ATTEMPT = (
    update(attempts)
    .where(attempts.c.job_id == bindparam("k_id"), attempts.c.epoch == bindparam("k_epoch"))
    .values(
        outcome=AttemptOutcome.SUCCEEDED.value,
        ended_at=bindparam("k_now"),
        engine_seconds=bindparam("k_engine"),
        cost_usd=bindparam("k_cost"),
        timings=bindparam("k_timings"),
    )
)


_COMPLETE_JOB_KEYS = ("k_id", "k_epoch", "k_now", "k_step", "k_engine_total", "k_cost_total", "k_result")
_COMPLETE_ATTEMPT_KEYS = ("k_id", "k_epoch", "k_now", "k_engine", "k_cost", "k_timings")


@functools.cache
def _debit_statement(*, sqlite: bool, rate: bool, gpu: bool) -> Update:
    """One tenant's token buckets debited at once, or not at all: ``UPDATE tenants SET tokens =
    min(cap, tokens + (now − ts) · rate) − cost, ts = now WHERE id = ? AND min(…) ≥ cost RETURNING``
    for each bucket asked for (tokens NULL: full). Built once per shape."""
    least = func.min if sqlite else func.least
    greatest = func.max if sqlite else func.greatest
    now = bindparam("q_now", type_=Float)
    stmt = update(tenants).where(tenants.c.id == bindparam("q_tenant"))
    values: dict[str, Any] = {}
    for on, name in ((rate, "rate"), (gpu, "gpu")):
        if not on:
            continue
        tokens, ts = tenants.c[f"{name}_tokens"], tenants.c[f"{name}_ts"]
        cap = bindparam(f"q_{name}_cap", type_=Float)
        level = least(
            cap,
            func.coalesce(tokens, cap)
            + greatest(0.0, now - func.coalesce(ts, now)) * bindparam(f"q_{name}_rate", type_=Float),
        )
        cost = bindparam(f"q_{name}_cost", type_=Float)
        stmt = stmt.where(level >= cost)
        values[f"{name}_tokens"] = level - cost
        values[f"{name}_ts"] = now
    return stmt.values(**values).returning(tenants.c.id)


class SqlTx:
    """One database transaction. Obtain it from :meth:`SqlStore.transaction`."""

    def __init__(self, conn: Connection, dialect: Dialect):
        self.conn = conn
        self.dialect = dialect

    # ---------------------------------------------------------------- tenants and keys
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = (self.conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
        return tenant_from_row(row) if row else None

    def list_tenants(self) -> list[Tenant]:
        return [tenant_from_row(r) for r in self.conn.execute(select(tenants).order_by(tenants.c.id))]

    def insert_tenant(self, tenant: Tenant) -> None:
        """Insert a tenant unless one with its id exists (two replicas creating it at once: the
        second insert waits for the first and does nothing)."""
        values = {
            "id": tenant.id,
            "webhook_url": tenant.webhook_url,
            "webhook_secret": tenant.webhook_secret,
            "created_at": tenant.created_at,
            "limits": dumps(tenant.limits),
            "weight": tenant.weight,
        }
        dialect_insert = sqlite_insert if self.dialect.is_sqlite else postgresql_insert
        self.conn.execute(
            dialect_insert(tenants).values(**values).on_conflict_do_nothing(index_elements=["id"])
        )

    # ---------------------------------------------------------------- quotas (jobs.quotas)
    def set_tenant_limits(self, tenant_id: str, limits: Mapping[str, Any], weight: float | None) -> bool:
        """Store an admin's overrides of the default quotas; the buckets start full again."""
        res = self.conn.execute(
            update(tenants)
            .where(tenants.c.id == tenant_id)
            .values(limits=dumps(dict(limits)), weight=weight, rate_tokens=None, gpu_tokens=None)
        )
        return bool(res.rowcount)

    def debit_buckets(
        self,
        tenant_id: str,
        now: float,
        *,
        rate: tuple[float, float, float] | None = None,
        gpu: tuple[float, float, float] | None = None,
    ) -> bool:
        """Take ``cost`` from each bucket given as (refill per second, capacity, cost) — all of them,
        or none when one cannot pay: one ``UPDATE … RETURNING`` (:func:`_debit_statement`), which
        also holds the tenant's row until the transaction ends (submits of one tenant queue here)."""
        params: dict[str, Any] = {"q_tenant": tenant_id, "q_now": now}
        for name, bucket in (("rate", rate), ("gpu", gpu)):
            if bucket is not None:
                params.update(
                    {f"q_{name}_rate": bucket[0], f"q_{name}_cap": bucket[1], f"q_{name}_cost": bucket[2]}
                )
        stmt = _debit_statement(sqlite=self.dialect.is_sqlite, rate=rate is not None, gpu=gpu is not None)
        return self.conn.execute(stmt, params).first() is not None

    def lock_tenant(self, tenant_id: str) -> None:
        """Hold the tenant's row until the transaction ends (a submit that debits no bucket)."""
        self.conn.execute(self.dialect.locked(select(tenants.c.id).where(tenants.c.id == tenant_id), True))

    def get_buckets(self, tenant_id: str) -> Buckets | None:
        row = self.conn.execute(
            select(tenants.c.rate_tokens, tenants.c.rate_ts, tenants.c.gpu_tokens, tenants.c.gpu_ts).where(
                tenants.c.id == tenant_id
            )
        ).first()
        return Buckets(*row) if row else None

    def count_live_jobs(self, tenant_id: str) -> int:
        """The tenant's queued and running jobs (through ``ix_jobs_tenant_claim``)."""
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(
                    jobs.c.tenant == tenant_id,
                    jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
                )
            ).scalar_one()
        )

    def recent_engine_times(self, limit: int = 5000) -> list[tuple[str, str | None, dict[str, Any], float]]:
        """(kind, checkpoint, spec, engine seconds) of the succeeded ones among the newest ``limit``
        jobs: what pricing learns from (a bounded read, newest first through the primary key)."""
        newest = select(jobs.c.id).order_by(jobs.c.id.desc()).limit(limit).scalar_subquery()
        rows = self.conn.execute(
            select(jobs.c.kind, jobs.c.req_model, jobs.c.spec, jobs.c.engine_seconds).where(
                jobs.c.id.in_(newest), jobs.c.state == JobState.SUCCEEDED.value
            )
        )
        return [(r[0], r[1], loads(r[2], {}), float(r[3] or 0.0)) for r in rows]

    def update_tenant(self, tenant_id: str, **values: Any) -> None:
        self.conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))

    def insert_api_key(self, key: ApiKeyRecord) -> None:
        self.conn.execute(
            insert(api_keys).values(
                id=key.id,
                tenant=key.tenant,
                name=key.name,
                key_hash=key.key_hash,
                prefix=key.prefix,
                scopes=",".join(key.scopes),
                created_at=key.created_at,
                revoked_at=key.revoked_at,
            )
        )

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = (self.conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
        return api_key_from_row(row) if row else None

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        q = select(api_keys).order_by(api_keys.c.created_at)
        if tenant:
            q = q.where(api_keys.c.tenant == tenant)
        return [api_key_from_row(r) for r in self.conn.execute(q)]

    def revoke_api_key(self, key_id: str, now: float) -> bool:
        res = self.conn.execute(
            update(api_keys)
            .where(or_(api_keys.c.id == key_id, api_keys.c.prefix == key_id), api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(res.rowcount)

    def count_active_keys(self, scope: str | None = None) -> int:
        q = select(api_keys.c.scopes).where(api_keys.c.revoked_at.is_(None))
        rows = (self.conn.execute(q)).all()
        if scope is None:
            return len(rows)
        return sum(1 for r in rows if scope in r[0].split(","))

    # ---------------------------------------------------------------- jobs
    def insert_jobs(self, new_jobs: Sequence[Job], uses: Mapping[str, Sequence[str]] | None = None) -> None:
        """Insert new jobs; ``uses`` maps a job id to the models it uses besides its checkpoint."""
        if new_jobs:
            self.conn.execute(insert(jobs), [job_row(j) for j in new_jobs])
        rows = [{"job_id": j, "name": n} for j, names in (uses or {}).items() for n in dict.fromkeys(names)]
        if rows:
            self.conn.execute(insert(job_models), rows)

    def jobs_by_idempotency_key(self, tenant: str, keys: Sequence[str]) -> dict[str, Job]:
        if not keys:
            return {}
        rows = self.conn.execute(
            select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key.in_(list(keys)))
        )
        return {r._mapping["idempotency_key"]: job_from_row(r) for r in rows}

    def get_job(self, job_id: str, *, lock: bool = False) -> Job | None:
        """One job; ``lock`` holds its row until the transaction ends (a no-op on SQLite, whose
        write transactions are serialized anyway)."""
        row = self.conn.execute(self.dialect.locked(select(jobs).where(jobs.c.id == job_id), lock)).first()
        return job_from_row(row) if row else None

    def get_jobs(self, job_ids: Sequence[str], *, lock: bool = False) -> list[Job]:
        if not job_ids:
            return []
        query = select(jobs).where(jobs.c.id.in_(sorted(job_ids))).order_by(jobs.c.id)
        return [job_from_row(r) for r in self.conn.execute(self.dialect.locked(query, lock))]

    def list_jobs(
        self,
        *,
        tenant: str | None,
        states: Sequence[JobState] = (),
        kind: JobKind | None = None,
        label: tuple[str, str] | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        q = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if tenant is not None:
            q = q.where(jobs.c.tenant == tenant)
        if states:
            q = q.where(jobs.c.state.in_([s.value for s in states]))
        if kind is not None:
            q = q.where(jobs.c.kind == kind.value)
        if before:
            q = q.where(jobs.c.id < before)
        if label is not None:  # in SQL, before the LIMIT, so pages are full
            q = q.where(self.dialect.json_text(jobs.c.labels, label[0]) == label[1])
        return [job_from_row(r) for r in self.conn.execute(q)]

    def has_jumped(self, job_id: str) -> bool:
        """Whether the job was put at the head of the queue (stalled) before."""
        return bool(self.conn.execute(select(jobs.c.jumped).where(jobs.c.id == job_id)).scalar())

    def update_job(
        self,
        job_id: str,
        *,
        expect_epoch: int | None = None,
        expect_states: Sequence[JobState] = (),
        **values: Any,
    ) -> bool:
        """Guarded update: applies only when the epoch and state still are what the caller saw."""
        q = update(jobs).where(jobs.c.id == job_id)
        if expect_epoch is not None:
            q = q.where(jobs.c.lease_epoch == expect_epoch)
        if expect_states:
            q = q.where(jobs.c.state.in_([s.value for s in expect_states]))
        res = self.conn.execute(q.values(**encode(values, JOB_JSON_COLUMNS)))
        return bool(res.rowcount)

    def claim_jobs(
        self,
        *,
        worker_id: str,
        caps: Capabilities,
        limit: int,
        now: float,
        lease_until: float,
        affinity: Affinity | None = None,
        default_weight: float = 1.0,
        share_memory: float = 10.0,
    ) -> list[Job]:
        """Atomically hand up to ``limit`` queued jobs this worker may take to it.

        Tenants take turns (weighted fair share, :func:`claim_statement`; ``default_weight`` for
        tenants without their own, ``share_memory`` the decay time of what they were handed). Within a tenant: stalled (re-queued after a lost lease) first,
        then priority, then age. With
        ``affinity`` (and some warm model reported), between priority and age: jobs past the aging
        bound, then how warm the job's models are on this worker; a job warmer on another live
        worker is left for it until it ages (:func:`claim_statement`). Jobs on which this
        worker already failed are skipped. Every hand-out bumps the lease epoch.
        """
        params = {
            "c_worker": worker_id,
            "c_kinds": list(caps.kinds),
            "c_archs": list(caps.archs) or [""],
            "c_max_pixels": caps.max_pixels,
            "c_not_features": ~int(caps.features) & FEATURE_MASK,
            "c_limit": limit,
            "c_window": limit,
            "c_now": now,
            "c_lease_until": lease_until,
            "c_weight": default_weight,
            "c_memory": share_memory,
        }
        warm = affinity is not None and not affinity.empty
        if affinity is not None and warm:
            params.update(
                c_loaded=list(affinity.loaded),
                c_cached=list(affinity.cached),
                c_loaded_else=list(affinity.loaded_elsewhere),
                c_cached_else=list(affinity.cached_elsewhere),
                c_aged_before=affinity.aged_before,
                c_window=max(affinity.window, limit),
            )
        stmt = claim_statement(skip_locked=not self.dialect.is_sqlite, affinity=warm)
        claimed = [job_from_row(r) for r in self.conn.execute(stmt, params)]
        claimed.sort(key=lambda j: (not j.stalled, -j.priority, j.id))
        if claimed:
            served: dict[str, int] = {}
            for j in claimed:
                served[j.tenant] = served.get(j.tenant, 0) + 1
            self._mark_served(dict(sorted(served.items())), now, share_memory)
        return claimed

    def _mark_served(self, served: Mapping[str, int], now: float, memory: float) -> None:
        """Record what a claim handed each tenant (the fair-share state: decayed use, last time). On
        PostgreSQL a row another claimer is writing is skipped, not waited for — claims never queue
        behind each other on a tenant's row; under such contention the count runs a little low."""
        postgres = not self.dialect.is_sqlite
        row = tenants.c.id == bindparam("s_tenant")
        if postgres:
            row = tenants.c.id.in_(
                select(tenants.c.id).where(row).with_for_update(skip_locked=True).scalar_subquery()
            )
        used = recent_use(
            tenants.c.share_used, tenants.c.served_at, bindparam("s_now", type_=Float), postgres
        )
        self.conn.execute(
            update(tenants)
            .where(row)
            .values(share_used=used + bindparam("s_jobs", type_=Float), served_at=bindparam("s_now")),
            [{"s_tenant": t, "s_jobs": n, "s_now": now, "c_memory": memory} for t, n in served.items()],
        )

    def jobs_with_expired_lease(self, now: float, limit: int = 500) -> list[Job]:
        query = (
            select(jobs)
            .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now)
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        return [job_from_row(r) for r in self.conn.execute(self.dialect.lock_for_claim(query))]

    def any_expired_lease(self, now: float) -> bool:
        row = (
            self.conn.execute(
                select(literal(1))
                .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now)
                .limit(1)
            )
        ).first()
        return row is not None

    def extend_leases(
        self, worker_id: str, beats: Sequence[tuple[str, int, int, int]], now: float, lease_until: float
    ) -> dict[tuple[str, int], LeaseAnswer]:
        """Extend the leases this worker holds and record progress. ``beats`` are (job_id, epoch,
        step, total). A job whose lease ran out but that nobody took since (same epoch) is taken
        back. Returns an answer for every (job_id, epoch) in ``beats``."""
        if not beats:
            return {}
        ids = [b[0] for b in beats]
        query = (
            select(
                jobs.c.id,
                jobs.c.lease_epoch,
                jobs.c.state,
                jobs.c.lease_worker,
                jobs.c.cancel_requested,
                jobs.c.progress_step,
                jobs.c.tenant,
            )
            .where(jobs.c.id.in_(sorted(ids)))
            .order_by(jobs.c.id)
        )
        rows = self.conn.execute(self.dialect.locked(query, True)).all()
        current = {r[0]: r for r in rows}
        answers: dict[tuple[str, int], LeaseAnswer] = {}
        updates: list[dict[str, Any]] = []
        for job_id, epoch, step, total in beats:
            r = current.get(job_id)
            if r is None:
                answers[(job_id, epoch)] = LeaseAnswer(held=False, cancel=False, previous_step=0, tenant="")
                continue
            held = (
                r[1] == epoch
                and r[3] == worker_id
                and r[2] in (JobState.RUNNING.value, JobState.QUEUED.value)
            )
            answers[(job_id, epoch)] = LeaseAnswer(
                held=held, cancel=bool(r[4]), previous_step=r[5], tenant=r[6]
            )
            if held:
                updates.append({"b_id": job_id, "b_epoch": epoch, "b_step": step, "b_total": total})
        if updates:
            self.conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == bindparam("b_id"),
                    jobs.c.lease_epoch == bindparam("b_epoch"),
                    # not IN (…): expanding parameters cannot be used with executemany
                    or_(jobs.c.state == JobState.RUNNING.value, jobs.c.state == JobState.QUEUED.value),
                )
                .values(
                    state=JobState.RUNNING.value,
                    lease_expires_at=lease_until,
                    updated_at=now,
                    progress_step=bindparam("b_step"),
                    progress_total=bindparam("b_total"),
                ),
                updates,
            )
            self.conn.execute(
                update(attempts)
                .where(attempts.c.job_id == bindparam("b_id"), attempts.c.epoch == bindparam("b_epoch"))
                .values(last_heartbeat_at=now, outcome=AttemptOutcome.RUNNING.value, ended_at=None),
                [{"b_id": u["b_id"], "b_epoch": u["b_epoch"]} for u in updates],
            )
        return answers

    def complete_jobs(self, done: Sequence[CompletedJob], worker_id: str, now: float) -> None:
        """Mark checked completions succeeded and end their attempts (two batched statements)."""
        rows = [
            {
                "k_id": d.job.id,
                "k_epoch": d.epoch,
                "k_now": now,
                "k_step": d.job.progress_total or d.job.progress_step,
                "k_engine_total": d.job.engine_seconds,
                "k_cost_total": d.job.cost_usd,
                "k_result": dumps(d.result),
                "k_engine": d.engine_seconds,
                "k_cost": d.cost,
                "k_timings": dumps(d.timings),
            }
            for d in done
        ]
        self.conn.execute(_COMPLETE_JOB, [{k: r[k] for k in _COMPLETE_JOB_KEYS} for r in rows])
        self.conn.execute(_COMPLETE_ATTEMPT, [{k: r[k] for k in _COMPLETE_ATTEMPT_KEYS} for r in rows])

    def jobs_held_by(self, worker_id: str) -> list[Job]:
        rows = self.conn.execute(
            select(jobs).where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_worker == worker_id)
        )
        return [job_from_row(r) for r in rows]

    def set_wait_reason(self, job_ids: Sequence[str], reason: str | None) -> None:
        for i in range(0, len(job_ids), 500):
            self.conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(list(job_ids[i : i + 500])), jobs.c.state == JobState.QUEUED.value)
                .values(wait_reason=reason)
            )

    def count_jobs_by_state(self) -> dict[str, int]:
        rows = self.conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
        return {r[0]: r[1] for r in rows}

    def queued_requirements(self, limit: int = 1000) -> list[tuple[str, Requirements, float, str | None]]:
        """(job id, requirements, queued_at, wait_reason) of the oldest queued jobs."""
        rows = self.conn.execute(
            select(
                jobs.c.id,
                jobs.c.kind,
                jobs.c.req_arch,
                jobs.c.req_pixels,
                jobs.c.req_features,
                jobs.c.req_model,
                jobs.c.queued_at,
                jobs.c.wait_reason,
            )
            .where(jobs.c.state == JobState.QUEUED.value)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        return [
            (r[0], Requirements(JobKind(r[1]), r[2], r[3], Feature(r[4]), r[5]), r[6], r[7]) for r in rows
        ]

    def model_demand(self) -> dict[str, dict[str, float]]:
        """Per model name, over queued and running jobs (checkpoints from ``req_model``, the rest
        from ``job_models``): ``queued``, ``running``, ``queued_at_sum`` and ``oldest_queued_at``
        (of the queued ones). Jobs naming no model are not counted."""
        live = (JobState.QUEUED.value, JobState.RUNNING.value)
        stats = (func.count(), func.sum(jobs.c.queued_at), func.min(jobs.c.queued_at))
        checkpoints = (
            select(jobs.c.req_model, jobs.c.state, *stats)
            .where(jobs.c.state.in_(live), jobs.c.req_model.is_not(None))
            .group_by(jobs.c.req_model, jobs.c.state)
        )
        others = (
            select(job_models.c.name, jobs.c.state, *stats)
            .select_from(jobs.join(job_models, job_models.c.job_id == jobs.c.id))
            .where(jobs.c.state.in_(live))
            .group_by(job_models.c.name, jobs.c.state)
        )
        result: dict[str, dict[str, float]] = {}
        for query in (checkpoints, others):
            for name, state, count, queued_sum, oldest in self.conn.execute(query):
                row = result.setdefault(
                    name, {"queued": 0, "running": 0, "queued_at_sum": 0.0, "oldest_queued_at": 0.0}
                )
                row[state] += count
                if state == JobState.QUEUED.value:
                    row["queued_at_sum"] += float(queued_sum or 0.0)
                    first = float(oldest) if oldest is not None else 0.0
                    row["oldest_queued_at"] = min(row["oldest_queued_at"] or first, first)
        return result

    def recent_model_waits(self, since: float, limit: int = 2000) -> dict[str, list[float]]:
        """Per model name, the queue waits (first hand-out − submit) of those of the newest
        ``limit`` jobs that were first handed out since ``since`` (a bounded read, newest id first
        through the primary key, whatever the size of the table)."""
        rows = self.conn.execute(
            select(jobs.c.id, jobs.c.req_model, jobs.c.created_at, jobs.c.started_at)
            .order_by(jobs.c.id.desc())
            .limit(limit)
        ).all()
        wait_of = {r[0]: max(0.0, r[3] - r[2]) for r in rows if r[3] is not None and r[3] >= since}
        waits: dict[str, list[float]] = {}
        for r in rows:
            if r[1] is not None and r[0] in wait_of:
                waits.setdefault(r[1], []).append(wait_of[r[0]])
        ids = sorted(wait_of)
        for i in range(0, len(ids), 500):
            query = select(job_models.c.job_id, job_models.c.name).where(
                job_models.c.job_id.in_(ids[i : i + 500])
            )
            for job_id, name in self.conn.execute(query):
                waits.setdefault(name, []).append(wait_of[job_id])
        return waits

    def tenant_usage(self, tenant: str) -> dict[str, Any]:
        row = (
            self.conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(jobs.c.cost_usd), 0.0),
                    func.coalesce(func.sum(jobs.c.engine_seconds), 0.0),
                ).where(jobs.c.tenant == tenant)
            )
        ).one()
        images = (
            self.conn.execute(select(func.count()).select_from(outputs).where(outputs.c.tenant == tenant))
        ).scalar_one()
        return {"jobs": row[0], "cost_usd": float(row[1]), "engine_seconds": float(row[2]), "images": images}

    # ---------------------------------------------------------------- fleet activity (web page charts)
    def activity_by_minute(self, since: float, until: float) -> dict[int, dict[str, float]]:
        """What the fleet finished per minute in ``[since, until)``: minute index (0 is the minute
        starting at ``since``) → succeeded and failed attempts, images, engine seconds and cost
        (of every attempt that ended, interrupted ones too: that GPU time was paid for).

        Reads attempts by worker through ``ix_attempts_worker_outcome``, so it touches only the
        window's rows; minutes in which nothing ended are absent."""
        worker_ids = list(self.conn.execute(select(workers.c.id)).scalars())
        if not worker_ids:
            return {}
        minute = self.dialect.minute_index(attempts.c.ended_at, since)
        ended = (
            attempts.c.worker_id.in_(worker_ids),
            attempts.c.outcome != AttemptOutcome.RUNNING.value,
            attempts.c.ended_at >= since,
            attempts.c.ended_at < until,
        )
        result: dict[int, dict[str, float]] = {}

        def bucket(index: int) -> dict[str, float]:
            return result.setdefault(
                int(index), {"succeeded": 0, "failed": 0, "images": 0, "engine_seconds": 0.0, "cost_usd": 0.0}
            )

        rows = self.conn.execute(
            select(
                minute,
                attempts.c.outcome,
                func.count(),
                func.coalesce(func.sum(attempts.c.engine_seconds), 0.0),
                func.coalesce(func.sum(attempts.c.cost_usd), 0.0),
            )
            .where(*ended)
            .group_by(minute, attempts.c.outcome)
        )
        for index, outcome, count, seconds, cost in rows:
            row = bucket(index)
            if outcome in (AttemptOutcome.SUCCEEDED.value, AttemptOutcome.FAILED.value):
                row[outcome] += count
            row["engine_seconds"] += float(seconds)
            row["cost_usd"] += float(cost)
        images = self.conn.execute(
            select(minute, func.count())
            .select_from(attempts.join(outputs, outputs.c.job_id == attempts.c.job_id))
            .where(*ended, attempts.c.outcome == AttemptOutcome.SUCCEEDED.value)
            .group_by(minute)
        )
        for index, count in images:
            bucket(index)["images"] += count
        return result

    # ---------------------------------------------------------------- attempts
    def insert_attempts(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(attempts), [encode(r, ("timings",)) for r in rows])

    def end_attempt(self, job_id: str, epoch: int, **values: Any) -> None:
        self.conn.execute(
            update(attempts)
            .where(attempts.c.job_id == job_id, attempts.c.epoch == epoch)
            .values(**encode(values, ("timings",)))
        )

    def list_attempts(self, job_id: str) -> list[Attempt]:
        rows = self.conn.execute(select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id))
        return [attempt_from_row(r) for r in rows]

    def failed_attempts_of_worker(self, worker_id: str, since: float) -> list[Attempt]:
        rows = self.conn.execute(
            select(attempts).where(
                attempts.c.worker_id == worker_id,
                attempts.c.outcome == AttemptOutcome.FAILED.value,
                attempts.c.ended_at >= since,
                attempts.c.refunded.is_(False),
            )
        )
        return [attempt_from_row(r) for r in rows]

    def mark_attempts_refunded(self, attempt_ids: Sequence[int]) -> None:
        if attempt_ids:
            self.conn.execute(
                update(attempts).where(attempts.c.id.in_(list(attempt_ids))).values(refunded=True)
            )

    # ---------------------------------------------------------------- workers
    def insert_worker(self, worker: WorkerInfo) -> None:
        caps = worker.capabilities
        self.conn.execute(
            insert(workers).values(
                id=worker.id,
                name=worker.name,
                tenant=worker.tenant,
                state=worker.state.value,
                kinds=",".join(caps.kinds),
                archs=",".join(caps.archs),
                max_pixels=caps.max_pixels,
                features=int(caps.features),
                gpu_name=worker.gpu_name,
                gpu_memory_mb=worker.gpu_memory_mb,
                price_per_hour=worker.price_per_hour,
                engine=worker.engine,
                version=worker.version,
                registered_at=worker.registered_at,
                last_seen_at=worker.last_seen_at,
                current_jobs=dumps(worker.current_jobs),
                loaded_models=dumps(worker.loaded_models),
                info=dumps(worker.info),
                cached_models=dumps(worker.cached_models),
            )
        )

    def get_worker(self, worker_id: str) -> WorkerInfo | None:
        row = (self.conn.execute(select(workers).where(workers.c.id == worker_id))).first()
        return worker_from_row(row) if row else None

    def list_workers(self, *, seen_since: float | None = None) -> list[WorkerInfo]:
        q = select(workers).order_by(workers.c.registered_at)
        if seen_since is not None:
            q = q.where(workers.c.last_seen_at >= seen_since)
        return [worker_from_row(r) for r in self.conn.execute(q)]

    def update_worker(self, worker_id: str, **values: Any) -> bool:
        res = self.conn.execute(
            update(workers).where(workers.c.id == worker_id).values(**encode(values, WORKER_JSON_COLUMNS))
        )
        return bool(res.rowcount)

    def add_worker_counters(
        self, worker_id: str, *, done: int = 0, failed: int = 0, engine_seconds: float = 0.0
    ) -> None:
        self.conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(
                jobs_done=workers.c.jobs_done + done,
                jobs_failed=workers.c.jobs_failed + failed,
                engine_seconds=workers.c.engine_seconds + engine_seconds,
            )
        )

    # ---------------------------------------------------------------- outputs
    def insert_outputs_of(self, rows: Sequence[tuple[Output, str]]) -> None:
        """Insert outputs of several jobs: (output, tenant) pairs."""
        if rows:
            self.conn.execute(
                insert(outputs),
                [
                    {
                        "job_id": o.job_id,
                        "idx": o.index,
                        "tenant": t,
                        "blob_key": o.blob_key,
                        "content_type": o.content_type,
                        "size": o.size,
                        "seed": o.seed,
                        "infotext": o.infotext,
                        "sha256": o.sha256,
                        "created_at": o.created_at,
                    }
                    for o, t in rows
                ],
            )

    def list_outputs(self, job_id: str) -> list[Output]:
        rows = self.conn.execute(select(outputs).where(outputs.c.job_id == job_id).order_by(outputs.c.idx))
        return [output_from_row(r) for r in rows]

    def outputs_for_jobs(self, job_ids: Sequence[str]) -> dict[str, list[Output]]:
        result: dict[str, list[Output]] = {j: [] for j in job_ids}
        if job_ids:
            rows = self.conn.execute(
                select(outputs)
                .where(outputs.c.job_id.in_(list(job_ids)))
                .order_by(outputs.c.job_id, outputs.c.idx)
            )
            for r in rows:
                result[r._mapping["job_id"]].append(output_from_row(r))
        return result

    def list_tenant_outputs(
        self, tenant: str | None, *, before: tuple[float, str, int] | None, limit: int
    ) -> list[tuple[Output, str]]:
        q = (
            select(outputs)
            .order_by(outputs.c.created_at.desc(), outputs.c.job_id.desc(), outputs.c.idx.desc())
            .limit(limit)
        )
        if tenant is not None:
            q = q.where(outputs.c.tenant == tenant)
        if before is not None:
            t, job_id, idx = before
            q = q.where(
                or_(
                    outputs.c.created_at < t,
                    and_(outputs.c.created_at == t, outputs.c.job_id < job_id),
                    and_(outputs.c.created_at == t, outputs.c.job_id == job_id, outputs.c.idx < idx),
                )
            )
        return [(output_from_row(r), r._mapping["tenant"]) for r in self.conn.execute(q)]

    def delete_outputs(self, job_id: str) -> None:
        self.conn.execute(delete(outputs).where(outputs.c.job_id == job_id))

    # ---------------------------------------------------------------- events and webhooks
    def insert_events(self, rows: Sequence[tuple[str, str, EventType, dict[str, Any], float]]) -> None:
        """Append events: (job_id, tenant, type, data, created_at)."""
        if rows:
            self.conn.execute(
                insert(events),
                [
                    {"job_id": j, "tenant": t, "type": ty.value, "data": dumps(d), "created_at": c}
                    for j, t, ty, d, c in rows
                ],
            )

    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[Event]:
        rows = self.conn.execute(
            select(events)
            .where(events.c.job_id == job_id, events.c.id > after_id)
            .order_by(events.c.id)
            .limit(limit)
        )
        return [event_from_row(r) for r in rows]

    def prune_events(self, older_than: float) -> int:
        res = self.conn.execute(delete(events).where(events.c.created_at < older_than))
        return int(res.rowcount or 0)

    def insert_outbox(self, rows: Sequence[OutboxMessage]) -> None:
        if rows:
            self.conn.execute(
                insert(webhook_outbox),
                [
                    {
                        "message_id": m.message_id,
                        "job_id": m.job_id,
                        "tenant": m.tenant,
                        "url": m.url,
                        "event_type": m.event_type,
                        "payload": m.payload,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": m.next_attempt_at,
                        "created_at": m.created_at,
                    }
                    for m in rows
                ],
            )

    def lock_due_webhooks(self, now: float, lock_until: float, limit: int) -> list[OutboxMessage]:
        due = (
            select(webhook_outbox.c.id)
            .where(
                webhook_outbox.c.state == "pending",
                webhook_outbox.c.next_attempt_at <= now,
                or_(webhook_outbox.c.locked_until.is_(None), webhook_outbox.c.locked_until < now),
            )
            .order_by(webhook_outbox.c.next_attempt_at)
            .limit(limit)
        )
        due = self.dialect.lock_for_claim(due)
        rows = self.conn.execute(
            update(webhook_outbox)
            .where(webhook_outbox.c.id.in_(due.scalar_subquery()))
            .values(locked_until=lock_until)
            .returning(*webhook_outbox.c)
        )
        return [outbox_from_row(r) for r in rows]

    def update_webhook(self, message_id: str, **values: Any) -> None:
        self.conn.execute(
            update(webhook_outbox).where(webhook_outbox.c.message_id == message_id).values(**values)
        )

    # ---------------------------------------------------------------- model registry
    def upsert_model(self, model: ModelRecord) -> None:
        values = {
            "kind": model.kind.value,
            "arch": model.arch,
            "source": model.source,
            "sha256": model.sha256,
            "size": model.size,
            "trigger_words": dumps(model.trigger_words),
            "default_weight": model.default_weight,
            "description": model.description,
            "resolution": model.resolution,
        }
        done = self.conn.execute(update(models).where(models.c.name == model.name).values(**values))
        if not done.rowcount:
            self.conn.execute(insert(models).values(name=model.name, created_at=model.created_at, **values))

    def get_models(self, names: Sequence[str]) -> dict[str, ModelRecord]:
        if not names:
            return {}
        rows = self.conn.execute(select(models).where(models.c.name.in_(sorted(set(names)))))
        return {r._mapping["name"]: model_from_row(r) for r in rows}

    def list_models(self, kind: ModelKind | None = None) -> list[ModelRecord]:
        query = select(models).order_by(models.c.kind, models.c.name)
        if kind is not None:
            query = query.where(models.c.kind == kind.value)
        return [model_from_row(r) for r in self.conn.execute(query)]

    def delete_model(self, name: str) -> bool:
        return bool(self.conn.execute(delete(models).where(models.c.name == name)).rowcount)

    def list_webhooks(self, job_id: str) -> list[OutboxMessage]:
        rows = self.conn.execute(
            select(webhook_outbox).where(webhook_outbox.c.job_id == job_id).order_by(webhook_outbox.c.id)
        )
        return [outbox_from_row(r) for r in rows]

    # ================================================================ A1111-compatible API (issue 4)
    # Per-tenant A1111 settings and the task ids of A1111 requests; see sdfleet.api.routes.a1111.

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


class SqlStore:
    """The job store on SQLAlchemy Core: SQLite (embedded) or PostgreSQL (scale-out), chosen by URL.

    Use cases run as plain functions of a :class:`SqlTx` in the store's own threads, one thread hop
    per transaction: ``await store.write(fn)`` / ``await store.read(fn)``. (SQLAlchemy's async
    layer costs one hop per statement — measured here at about 20× the cost of a statement.)
    SQLite writes go through one writer thread and connection (``BEGIN IMMEDIATE``); reads use a
    small pool and never block writers (WAL).
    """

    def __init__(self, url: str, *, pool_size: int = 10):
        self.url = url
        self.dialect = dialect_for(url)
        if self.dialect.is_sqlite:
            db = make_url(self.dialect.sync_url).database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        self._writer, self._reader = self.dialect.create_engines(pool_size)
        writers = 1 if self.dialect.is_sqlite else pool_size
        self._write_pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="db-write")
        self._read_pool = ThreadPoolExecutor(
            max_workers=4 if self.dialect.is_sqlite else pool_size, thread_name_prefix="db-read"
        )

    @property
    def writer_engine(self) -> Engine:
        return self._writer

    def _run_write(self, fn: Callable[[SqlTx], T]) -> T:
        try:
            with self._writer.begin() as conn:
                return fn(SqlTx(conn, self.dialect))
        except OperationalError as exc:
            raise ServiceUnavailable(f"database unavailable: {exc.orig}") from exc

    def _run_read(self, fn: Callable[[SqlTx], T]) -> T:
        try:
            with self._reader.connect() as conn:
                return fn(SqlTx(conn, self.dialect))
        except OperationalError as exc:
            raise ServiceUnavailable(f"database unavailable: {exc.orig}") from exc

    async def write(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in one read-write transaction; commits when it returns, rolls back on error."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, self._run_write, fn)

    async def read(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in a read-only transaction (never blocks writers)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, fn)

    async def ping(self) -> None:
        await self.read(lambda tx: tx.conn.execute(select(literal(1))).scalar_one())

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write_pool, self._writer.dispose)
        if self._reader is not self._writer:
            await loop.run_in_executor(self._read_pool, self._reader.dispose)
        self._write_pool.shutdown(wait=False)
        self._read_pool.shutdown(wait=False)
