"""The claim: the fair-share, cache-aware ``UPDATE jobs … RETURNING`` that hands jobs to a worker.

:func:`claim_statement` builds it from the pieces here — the conditions every candidate meets
(:func:`_claimable`), how warm a job's models are on a worker (:func:`_warmth`, weighted by the
constants below), a tenant's decaying recent use (:func:`recent_use`) and the hand-out itself
(:func:`_hand_out`). Every value is a bound parameter (``c_…``), filled by
:meth:`sdfleet.store.tx.SqlTx.claim_jobs`.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Float, Integer, Update, bindparam, case, exists, func, or_, select, true, update

from sdfleet.domain import AttemptOutcome, JobState
from sdfleet.store.schema import attempts, job_models, jobs, tenants

FEATURE_MASK = 0xFFFF  # the feature bits a claim compares (``c_not_features``: those a worker lacks)

# Warmth weights: the checkpoint (GBs to load) counts 4× a LoRA/VAE/refiner (MBs); in memory counts
# twice on disk. A job naming no checkpoint runs on whatever the worker holds: warm everywhere.
CHECKPOINT_LOADED, CHECKPOINT_CACHED, OTHER_LOADED, OTHER_CACHED = 8, 4, 2, 1


def _warmth(loaded: str, cached: str, j: Any = jobs) -> Any:
    """SQL: how warm a job's models are on a worker whose names are the expanding parameters
    ``loaded`` and ``cached`` (a correlated subquery over ``job_models`` for the non-checkpoint ones)."""
    checkpoint = case(
        (j.c.req_model.is_(None), CHECKPOINT_LOADED),
        (j.c.req_model.in_(bindparam(loaded, expanding=True)), CHECKPOINT_LOADED),
        (j.c.req_model.in_(bindparam(cached, expanding=True)), CHECKPOINT_CACHED),
        else_=0,
    )
    others = (
        select(
            func.coalesce(
                func.sum(
                    case(
                        (job_models.c.name.in_(bindparam(loaded, expanding=True)), OTHER_LOADED),
                        (job_models.c.name.in_(bindparam(cached, expanding=True)), OTHER_CACHED),
                        else_=0,
                    )
                ),
                0,
            )
        )
        .where(job_models.c.job_id == j.c.id)
        .scalar_subquery()
    )
    return checkpoint + others


def _claimable(j: Any = jobs) -> tuple[Any, ...]:
    """The conditions every claim candidate meets: queued, within the worker's capabilities, and
    not failed on this worker before (the per-job ban is the attempts table itself)."""
    failed_here = exists().where(
        attempts.c.job_id == j.c.id,
        attempts.c.worker_id == bindparam("c_worker"),
        attempts.c.outcome == AttemptOutcome.FAILED.value,
    )
    return (
        j.c.state == JobState.QUEUED.value,
        j.c.kind.in_(bindparam("c_kinds", expanding=True)),
        or_(j.c.req_arch.is_(None), j.c.req_arch.in_(bindparam("c_archs", expanding=True))),
        j.c.req_pixels <= bindparam("c_max_pixels"),
        j.c.req_features.op("&")(bindparam("c_not_features")) == 0,
        ~failed_here,
    )


def _hand_out(candidates: Any) -> Update:
    """``UPDATE jobs … WHERE id IN (candidates) RETURNING *``: the hand-out itself."""
    return (
        update(jobs)
        .where(jobs.c.id.in_(candidates))
        .values(
            state=JobState.RUNNING.value,
            lease_epoch=jobs.c.lease_epoch + 1,
            lease_worker=bindparam("c_worker"),
            lease_expires_at=bindparam("c_lease_until"),
            updated_at=bindparam("c_now"),
            started_at=func.coalesce(jobs.c.started_at, bindparam("c_now")),
            wait_reason=None,
            progress_step=0,
        )
        .returning(*jobs.c)
    )


@functools.cache
def recent_use(used: Any, served_at: Any, now: Any, postgres: bool) -> Any:
    """SQL: a tenant's jobs handed out lately, decayed since the last hand-out: ``used / (1 + Δt/τ)``
    (τ the parameter ``c_memory``) — arithmetic only, so SQLite needs no math functions. Applied at
    every hand-out it compounds to about ``exp(−t/τ)``."""
    greatest = func.greatest if postgres else func.max
    elapsed = greatest(0.0, now - func.coalesce(served_at, now))
    return func.coalesce(used, 0.0) / (1.0 + elapsed / bindparam("c_memory", type_=Float))


@functools.cache
def claim_statement(*, skip_locked: bool, affinity: bool) -> Update:
    """The fair-share claim, built once (every value a bound parameter):

    1. the window, per tenant: each tenant's first ``c_window`` claimable jobs in its plain order
       (stalled, priority, id — read through ``ix_jobs_tenant_claim``, so one tenant's deep queue
       costs no more than a shallow one and cannot fill another tenant's window); with ``affinity``
       each with its warmth here and its best warmth elsewhere (:func:`_warmth`); on PostgreSQL
       locked with ``SKIP LOCKED`` (a ``LATERAL`` subquery per tenant), so concurrent claimers take
       disjoint windows;
    2. with ``affinity``, of those the jobs this worker may take now — stalled, past the aging
       bound, or at least as warm here as on any other live worker (else the job waits for that
       worker, at most until it ages);
    3. fair share: each job's rank in its tenant's order (stalled, priority, [aged, warmth here,]
       id) plus the tenant's running jobs plus the jobs it was handed lately (``tenants.share_used``,
       decaying, :func:`recent_use`), divided by the tenant's weight — tenants take turns,
       weighted, and priority orders jobs within a tenant only; ties go to the tenant a claim served
       least recently (``tenants.served_at``);
    4. the hand-out of the first ``c_limit``.
    """
    t = tenants.alias("t")
    j = jobs.alias("j")
    columns: list[Any] = [j.c.id.label("id"), j.c.tenant.label("tenant"), j.c.stalled, j.c.priority]
    within: list[Any] = [j.c.stalled.desc(), j.c.priority.desc(), j.c.id]
    if affinity:
        aged = case((j.c.queued_at <= bindparam("c_aged_before"), 1), else_=0)
        columns += [
            aged.label("aged"),
            _warmth("c_loaded", "c_cached", j).label("here"),
            _warmth("c_loaded_else", "c_cached_else", j).label("elsewhere"),
        ]
    per_tenant = select(*columns).where(*_claimable(j), j.c.tenant == t.c.id).order_by(*within)
    per_tenant = per_tenant.limit(bindparam("c_window", type_=Integer))
    if skip_locked:
        lateral = per_tenant.with_for_update(skip_locked=True, of=j).lateral("c")
        window = select(lateral, t.c.weight, t.c.served_at, t.c.share_used).select_from(
            t.join(lateral, true())
        )
    else:
        # SQLite has no LATERAL: each tenant's window is a correlated subquery per *tenant* row (an
        # index walk of ix_jobs_tenant_claim that stops at c_window), collected with json_group_array and
        # unpacked with json_each — O(tenants × window) per claim, whatever the queue's depth (ranking
        # every claimable job with row_number() cost O(queue) per claim, and a correlated LIMIT per
        # job row was quadratic). The warmth columns are computed only for the window's rows.
        k = jobs.alias("k")
        first = (
            select(k.c.id)
            .where(*_claimable(k), k.c.tenant == t.c.id)
            .order_by(k.c.stalled.desc(), k.c.priority.desc(), k.c.id)
            .limit(bindparam("c_window", type_=Integer))
            .correlate(t)
            .subquery("x")
        )
        ids = select(func.json_group_array(first.c.id)).correlate(t).scalar_subquery()
        each = func.json_each(ids).table_valued("value").alias("e")
        window = select(*columns, t.c.weight, t.c.served_at, t.c.share_used).select_from(
            t.join(each, true()).join(j, j.c.id == each.c.value)
        )
    w = window.subquery("w")
    running = (
        select(jobs.c.tenant.label("tenant"), func.count().label("n"))
        .where(jobs.c.state == JobState.RUNNING.value)
        .group_by(jobs.c.tenant)
        .subquery("r")
    )
    order_in_tenant: list[Any] = [w.c.stalled.desc(), w.c.priority.desc()]
    if affinity:
        order_in_tenant += [w.c.aged.desc(), w.c.here.desc()]
    order_in_tenant.append(w.c.id)
    rank = func.row_number().over(partition_by=w.c.tenant, order_by=order_in_tenant)
    weight = func.coalesce(w.c.weight, bindparam("c_weight", type_=Float))
    recent = recent_use(w.c.share_used, w.c.served_at, bindparam("c_now", type_=Float), skip_locked)
    share = (func.coalesce(running.c.n, 0) + recent + rank) / weight
    ranked = select(
        w.c.id,
        share.label("share"),
        func.coalesce(w.c.served_at, 0.0).label("served_at"),
        *[
            getattr(w.c, name)
            for name in (("stalled", "priority", "aged", "here") if affinity else ("stalled", "priority"))
        ],
    ).select_from(w.outerjoin(running, running.c.tenant == w.c.tenant))
    if affinity:
        ranked = ranked.where(or_(w.c.stalled, w.c.aged == 1, w.c.here >= w.c.elsewhere))
    r = ranked.subquery("f")
    tie: list[Any] = [r.c.stalled.desc(), r.c.priority.desc()]
    if affinity:
        tie += [r.c.aged.desc(), r.c.here.desc()]
    chosen = (
        select(r.c.id)
        .order_by(r.c.share, r.c.served_at, *tie, r.c.id)
        .limit(bindparam("c_limit", type_=Integer))
    )
    return _hand_out(chosen.scalar_subquery())


@functools.cache
def served_statement(*, postgres: bool) -> Update:
    """``UPDATE tenants``: what a claim handed a tenant (``s_jobs`` at ``s_now``) added to its decayed
    recent use — the fair-share state. On PostgreSQL a row another claimer is writing is skipped
    (``SKIP LOCKED``), not waited for."""
    row: Any = tenants.c.id == bindparam("s_tenant")
    if postgres:
        row = tenants.c.id.in_(
            select(tenants.c.id).where(row).with_for_update(skip_locked=True).scalar_subquery()
        )
    used = recent_use(tenants.c.share_used, tenants.c.served_at, bindparam("s_now", type_=Float), postgres)
    return (
        update(tenants)
        .where(row)
        .values(share_used=used + bindparam("s_jobs", type_=Float), served_at=bindparam("s_now"))
    )
