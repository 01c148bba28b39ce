"""Tenants and their limits: the tenant row (created on first use), its webhook URL, its quota
overrides, and the GPU-second prices a submit is charged at (learned from recorded jobs and
re-read by each replica every minute). The charge itself runs in the submit's transaction
(:func:`sdfleet.jobs.quotas.charge_submit`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from sdfleet.config import Settings
from sdfleet.domain import JobKind
from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.quotas import DEFAULT, Pricing, TenantLimits, check_override, effective_limits, quota_view
from sdfleet.jobs.transitions import Effects, Transitions, Writer
from sdfleet.jobs.types import Clock, JobRequest, requirements_of
from sdfleet.jobs.webhooks import new_webhook_secret
from sdfleet.store import Buckets, SqlTx, Tenant

log = logging.getLogger("sdfleet.jobs")

PRICING_SECONDS = 60.0  # how long a replica prices jobs from one read of the recorded engine times


class Tenants:
    """The tenant use cases, and the per-replica price cache."""

    def __init__(self, settings: Settings, transitions: Transitions, write: Writer, clock: Clock):
        self.settings = settings
        self.transitions = transitions
        self._write = write
        self.store = write.store
        self.clock = clock
        self._prices: tuple[float, Pricing] | None = None  # (refresh after, GPU-second prices)

    async def ensure(self, tenant_id: str) -> Tenant:
        """The tenant row, created (with a new webhook secret) on first use."""
        tenant = await self.store.read(lambda tx: tx.get_tenant(tenant_id))
        if tenant is not None:
            return tenant

        def create(tx: SqlTx, fx: Effects) -> Tenant:
            existing = tx.get_tenant(tenant_id)
            if existing is not None:
                return existing
            row = Tenant(
                id=tenant_id, webhook_url=None, webhook_secret=new_webhook_secret(), created_at=self.clock()
            )
            tx.insert_tenant(row)  # does nothing when another replica created it meanwhile
            return tx.get_tenant(tenant_id) or row

        self.transitions.forget_tenant(tenant_id)
        return await self._write(create)

    async def set_webhook(self, tenant_id: str, url: str | None) -> Tenant:
        await self.ensure(tenant_id)

        def update(tx: SqlTx, fx: Effects) -> Tenant:
            tx.update_tenant(tenant_id, webhook_url=url)
            tenant = tx.get_tenant(tenant_id)
            assert tenant is not None
            return tenant

        self.transitions.forget_tenant(tenant_id)
        return await self._write(update)

    def limits_of(self, tenant: Tenant) -> TenantLimits:
        return effective_limits(self.settings.quotas, tenant.limits, tenant.weight)

    async def _pricing(self) -> Pricing:
        """GPU-second prices learned from recorded jobs, re-read by each replica every minute."""
        now = time.monotonic()
        if self._prices is not None and self._prices[0] > now:
            return self._prices[1]
        history = await self.store.read(lambda tx: tx.recent_engine_times())
        pricing = Pricing.from_history(self.settings.quotas, history)
        self._prices = (now + PRICING_SECONDS, pricing)
        return pricing

    async def estimate_gpu_seconds(self, kind: JobKind, spec: dict[str, Any], model: str | None) -> float:
        """A job's estimated GPU seconds (what the daily budget and the largest-job limit charge)."""
        return (await self._pricing()).estimate(kind, model, spec)

    async def gpu_costs(self, limits: TenantLimits | None, requests: Sequence[JobRequest]) -> list[float]:
        """Each request's estimated GPU seconds when a GPU limit applies (else nothing to price);
        a job over the largest-job limit is refused here, before anything is stored."""
        if limits is None or not limits.needs_price:
            return []
        pricing = await self._pricing()
        costs: list[float] = []
        for i, req in enumerate(requests):
            spec = req.spec.model_dump(mode="json")
            cost = pricing.estimate(req.kind, requirements_of(req.kind, req.spec, req.arch).model, spec)
            top = limits.max_job_gpu_seconds
            if top is not None and cost > top:
                where = f"jobs.{i}" if len(requests) > 1 else "params"
                raise LimitExceeded(
                    f"the job is estimated at {cost:.1f} GPU seconds, the largest allowed is {top:g}: "
                    "make it smaller (size, steps, batch)",
                    field=where,
                    details={"limit": "max_job_gpu_seconds", "estimate": round(cost, 3), "allowed": top},
                )
            costs.append(cost)
        return costs

    async def quota_status(self, tenant_id: str) -> dict[str, Any]:
        """A tenant's limits and what is left of each (``None``: unlimited)."""
        await self.ensure(tenant_id)
        now = self.clock()

        def read(tx: SqlTx) -> tuple[Tenant | None, Buckets | None, int]:
            return tx.get_tenant(tenant_id), tx.get_buckets(tenant_id), tx.count_live_jobs(tenant_id)

        tenant, buckets, live = await self.store.read(read)
        assert tenant is not None
        return quota_view(self.limits_of(tenant), buckets, live, now, enforced=self.settings.quotas.enabled)

    async def list_all(self) -> list[tuple[Tenant, TenantLimits]]:
        tenants = await self.store.read(lambda tx: tx.list_tenants())
        return [(t, self.limits_of(t)) for t in tenants]

    async def set_limits(self, tenant_id: str, changes: dict[str, Any]) -> TenantLimits:
        """Change a tenant's limits: a value sets it (``None``: unlimited), :data:`DEFAULT` goes back
        to the settings' default. Creates the tenant when it does not exist yet; its buckets start
        full. Takes effect at the tenant's next submit on every replica."""
        for name, value in changes.items():
            if value is not DEFAULT:
                try:
                    check_override(name, value)
                except ValueError as exc:
                    raise ValidationError(str(exc), field=name) from exc
        await self.ensure(tenant_id)

        def tx_fn(tx: SqlTx, fx: Effects) -> Tenant:
            current = tx.get_tenant(tenant_id)
            assert current is not None
            overrides = dict(current.limits)
            for name, value in changes.items():
                if value is DEFAULT:
                    overrides.pop(name, None)
                else:
                    overrides[name] = check_override(name, value)
            weight = overrides.get("weight")
            tx.set_tenant_limits(tenant_id, overrides, float(weight) if weight is not None else None)
            fresh = tx.get_tenant(tenant_id)
            assert fresh is not None
            return fresh

        tenant = await self._write(tx_fn)
        self.transitions.forget_tenant(tenant_id)
        log.info("quota.changed tenant=%s limits=%s", tenant_id, json.dumps(tenant.limits, sort_keys=True))
        return self.limits_of(tenant)
