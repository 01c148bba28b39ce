"""Operator endpoints: the fleet's workers, quarantine, queue statistics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from sdfleet.api.deps import Admin, Ctx
from sdfleet.domain import WorkerInfo

router = APIRouter(prefix="/v1/admin", tags=["admin"])


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
    workers = await ctx.store.read(lambda tx: tx.list_workers())
    return {"workers": [_worker_view(w, now, ctx.settings.worker_offline_after) for w in workers]}


@router.post("/workers/{worker_id}/unquarantine")
async def unquarantine(worker_id: str, ctx: Ctx, _: Admin) -> dict[str, str]:
    """Let a quarantined worker take work again."""
    await ctx.jobs.release_quarantine(worker_id)
    return {"worker_id": worker_id, "state": "active"}


@router.get("/stats")
async def stats(ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Queue depth by state and workers online."""
    now = time.time()
    since = now - ctx.settings.worker_offline_after
    by_state, workers = await ctx.store.read(
        lambda tx: (tx.count_jobs_by_state(), tx.list_workers(seen_since=since))
    )
    return {
        "jobs": by_state,
        "workers_online": len(workers),
        "workers_by_state": {
            s: sum(1 for w in workers if w.state.value == s) for s in ("active", "quarantined", "stopped")
        },
    }
