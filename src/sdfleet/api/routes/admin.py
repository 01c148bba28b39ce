"""Operator endpoints: the fleet's workers, quarantine, queue statistics, tenants' quotas."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import Admin, Ctx
from sdfleet.domain import WorkerInfo
from sdfleet.jobs.quotas import DEFAULT, check_override

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=CheckedRoute)
ACTIVITY_MINUTES = 60


def _worker_view(w: WorkerInfo, now: float, offline_after: float) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "tenant": w.tenant,
        "state": w.state.value,
        "online": now - w.last_seen_at < offline_after,
        "last_seen_at": w.last_seen_at,
        "gpu_name": w.gpu_name,
        "gpu_memory_mb": w.gpu_memory_mb,
        "price_per_hour": w.price_per_hour,
        "engine": w.engine,
        "version": w.version,
        "capabilities": {
            "kinds": list(w.capabilities.kinds),
            "archs": list(w.capabilities.archs),
            "max_pixels": w.capabilities.max_pixels,
            "features": w.capabilities.features.names(),
        },
        "current_jobs": w.current_jobs,
        "loaded_models": w.loaded_models,
        "jobs_done": w.jobs_done,
        "jobs_failed": w.jobs_failed,
        "engine_seconds": round(w.engine_seconds, 3),
        "quarantined_until": w.quarantined_until,
        "quarantine_reason": w.quarantine_reason,
    }


@router.get("/workers")
async def list_workers(ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Every registered worker with its state, current jobs, loaded models and counters."""
    now = time.time()
    workers = await ctx.queries.workers()
    return {"workers": [_worker_view(w, now, ctx.settings.worker_offline_after) for w in workers]}


@router.post("/workers/{worker_id}/unquarantine")
async def unquarantine(worker_id: str, ctx: Ctx, _: Admin) -> dict[str, str]:
    """Let a quarantined worker take work again."""
    await ctx.jobs.release_quarantine(worker_id)
    return {"worker_id": worker_id, "state": "active"}


def _last_hour(activity: dict[int, dict[str, float]], start: float) -> dict[str, Any]:
    """Per-minute series (oldest first, zeros filled in) and totals, with images per dollar."""
    empty = {"succeeded": 0, "failed": 0, "images": 0, "engine_seconds": 0.0, "cost_usd": 0.0}
    minutes = [
        {"t": start + 60 * i, **{k: round(v, 8) for k, v in activity.get(i, empty).items()}}
        for i in range(ACTIVITY_MINUTES)
    ]
    totals = {k: round(sum(m[k] for m in minutes), 8) for k in empty}
    cost = totals["cost_usd"]
    return {
        "start": start,
        "minute_seconds": 60,
        "minutes": minutes,
        "totals": {**totals, "images_per_dollar": round(totals["images"] / cost, 2) if cost > 0 else None},
    }


@router.get("/stats")
async def stats(ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Queue depth by state, workers online, and the last hour minute by minute: attempts that
    succeeded and failed, images, engine seconds and cost (``last_hour``; the last minute is the
    current, partial one), with images per dollar over the hour."""
    now = time.time()
    since = now - ctx.settings.worker_offline_after
    start = (now // 60 - (ACTIVITY_MINUTES - 1)) * 60
    found = await ctx.queries.stats(seen_since=since, activity=(start, start + 60 * ACTIVITY_MINUTES))
    by_state, workers, activity = found.by_state, found.workers, found.activity
    return {
        "jobs": by_state,
        "workers_online": len(workers),
        "workers_by_state": {
            s: sum(1 for w in workers if w.state.value == s) for s in ("active", "quarantined", "stopped")
        },
        "last_hour": _last_hour(activity, start),
    }


# ===================================================================== tenants: quotas and fair share

TenantId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
Setting = Annotated[
    Any,
    Field(json_schema_extra={"anyOf": [{"type": "number"}, {"const": "default"}, {"type": "null"}]}),
]


class TenantLimitsPatch(BaseModel):
    """Change some of a tenant's limits: a number sets it, ``null`` makes it unlimited (``rate``,
    ``max_concurrent``, ``gpu_seconds_per_day``, ``max_job_gpu_seconds``), ``"default"`` goes back to
    the server's default. Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    rate: Setting = Field(default=None, description="Jobs per second, on average (null: unlimited)")
    burst: Setting = Field(default=None, description="Jobs at once (the bucket's size)")
    max_concurrent: Setting = Field(
        default=None, description="Queued + running jobs at once (null: unlimited)"
    )
    gpu_seconds_per_day: Setting = Field(default=None, description="Estimated GPU seconds per day")
    max_job_gpu_seconds: Setting = Field(
        default=None, description="Largest single job, estimated GPU seconds"
    )
    weight: Setting = Field(default=None, description="Fair-share weight (default 1)")

    @field_validator("*")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "default":
            return value
        return check_override(str(info.field_name), value)


async def _tenant_view(ctx: Ctx, tenant_id: str) -> dict[str, Any]:
    return {"id": tenant_id, "quota": await ctx.jobs.quota_status(tenant_id)}


@router.get("/tenants")
async def list_tenants(ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Every tenant with its effective limits and which of them are its own."""
    rows = await ctx.jobs.list_tenants()
    return {
        "defaults": {name: getattr(ctx.settings.quotas, name) for name in _LIMITS},
        "enforced": ctx.settings.quotas.enabled,
        "tenants": [
            {"id": t.id, "created_at": t.created_at, "limits": lim.as_dict(), "custom": sorted(lim.overrides)}
            for t, lim in rows
        ],
    }


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: TenantId, ctx: Ctx, _: Admin) -> dict[str, Any]:
    """One tenant's limits and what is left of each now (the tenant is created if it is new)."""
    return await _tenant_view(ctx, tenant_id)


@router.patch("/tenants/{tenant_id}")
async def patch_tenant(tenant_id: TenantId, body: TenantLimitsPatch, ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Set a tenant's limits (takes effect at its next submit, on every replica; buckets start full)."""
    changes = {
        name: DEFAULT if value == "default" else value
        for name, value in body.model_dump(include=body.model_fields_set).items()
    }
    await ctx.jobs.set_tenant_limits(tenant_id, changes)
    return await _tenant_view(ctx, tenant_id)


_LIMITS = tuple(TenantLimitsPatch.model_fields)
