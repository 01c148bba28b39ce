"""The demand signal: per model, queued and running jobs, warm workers and waits
(``GET /v1/fleet/models``, admin scope) — what an autoscaler and operators need to decide which
models to pre-load where."""

from __future__ import annotations

from fastapi import APIRouter

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import Admin, Ctx
from sdfleet.jobs.affinity import warm_names
from sdfleet.wire import FleetModelsView, ModelDemandView

router = APIRouter(prefix="/v1/fleet", tags=["fleet"], route_class=CheckedRoute)
RECENT_WINDOW_SECONDS = 900.0


@router.get("/models")
async def fleet_models(ctx: Ctx, _: Admin) -> FleetModelsView:
    """Per model name (checkpoints, LoRAs, VAEs jobs name): queued and running jobs, live workers
    holding it in memory / on disk (their last report), the queued jobs' wait so far and the mean
    wait of jobs first handed out in the last 15 minutes. Models nobody uses or holds are left out."""
    now = ctx.jobs.clock()
    since = now - ctx.settings.worker_offline_after
    found = await ctx.queries.demand(waits_since=now - RECENT_WINDOW_SECONDS, seen_since=since)
    demand, waits, workers = found.demand, found.waits, found.workers
    loaded: dict[str, int] = {}
    cached: dict[str, int] = {}
    for w in workers:
        in_memory = warm_names(w.loaded_models)
        for name in in_memory:
            loaded[name] = loaded.get(name, 0) + 1
        for name in warm_names(w.cached_models) - in_memory:
            cached[name] = cached.get(name, 0) + 1
    names = sorted(set(demand) | set(waits) | set(loaded) | set(cached))
    kinds = await ctx.queries.models(names)
    views = []
    for name in names:
        d = demand.get(name, {})
        queued = int(d.get("queued", 0))
        recent = waits.get(name, [])
        views.append(
            ModelDemandView(
                name=name,
                kind=kinds[name].kind.value if name in kinds else None,
                queued=queued,
                running=int(d.get("running", 0)),
                workers_loaded=loaded.get(name, 0),
                workers_cached=cached.get(name, 0),
                queued_wait_avg_seconds=round(now - d["queued_at_sum"] / queued, 3) if queued else None,
                queued_wait_max_seconds=round(now - d["oldest_queued_at"], 3) if queued else None,
                recent_wait_avg_seconds=round(sum(recent) / len(recent), 3) if recent else None,
                recent_jobs=len(recent),
            )
        )
    views.sort(key=lambda v: (-v.queued, -v.running, v.name))
    return FleetModelsView(
        models=views,
        workers_online=len(workers),
        recent_window_seconds=RECENT_WINDOW_SECONDS,
        affinity_max_wait_seconds=ctx.settings.affinity_max_wait_seconds,
        generated_at=now,
    )
