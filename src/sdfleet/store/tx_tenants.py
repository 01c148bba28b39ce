"""Transaction statements on tenants: the tenant rows, their quotas and token buckets, API keys,
and what a tenant used (a mixin of :class:`sdfleet.store.tx.SqlTx`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Float, Update, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from sdfleet.domain import JobState
from sdfleet.store.dialect import Dialect
from sdfleet.store.records import ApiKeyRecord, Buckets, Tenant
from sdfleet.store.rows import api_key_from_row, dumps, loads, tenant_from_row
from sdfleet.store.schema import api_keys, jobs, outputs, tenants


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


class TenantStatements:
    """Tenants, quotas, API keys and usage. Runs on the transaction's connection."""

    conn: Connection
    dialect: Dialect

    # ---------------------------------------------------------------- tenants
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

    # ---------------------------------------------------------------- quotas (jobs.quotas) and pricing
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

    def refund_gpu(self, tenant_id: str, seconds: float) -> None:
        """Give ``seconds`` back to the tenant's GPU bucket (a full bucket, NULL, stays full; the next
        read caps it at the budget)."""
        self.conn.execute(
            update(tenants)
            .where(tenants.c.id == tenant_id, tenants.c.gpu_tokens.is_not(None))
            .values(gpu_tokens=tenants.c.gpu_tokens + seconds)
        )

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

    # ---------------------------------------------------------------- API keys
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

    # ---------------------------------------------------------------- usage
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
