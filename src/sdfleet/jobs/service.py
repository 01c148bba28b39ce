"""The job lifecycle (DESIGN.md §3): submit, claim, heartbeat, complete, fail, release, cancel,
expire — and the policies around it (fencing by lease epoch, retry budget, interruption cap,
per-job bans, quarantine of bad workers, expiry of jobs nobody can serve, cost accounting).

Every use case is one store transaction: the state change, the attempt record, the events and
the webhook messages commit together.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.config import Settings
from sdfleet.domain import (
    AttemptOutcome,
    Capabilities,
    EventType,
    Feature,
    GenerationSpec,
    Job,
    JobKind,
    JobState,
    ModelKind,
    ModelRecord,
    Output,
    Requirements,
    WorkerInfo,
    WorkerState,
    new_id,
)
from sdfleet.errors import LimitExceeded, NotFound, RateLimited, StaleLease, ValidationError
from sdfleet.jobs import policy
from sdfleet.jobs.affinity import WarmIndex, warm_names
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.models import lora_registration_name, named_models
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.quotas import (
    CONCURRENCY_RETRY_SECONDS,
    DAY_SECONDS,
    DEFAULT,
    Pricing,
    TenantLimits,
    check_override,
    effective_limits,
    quota_view,
    rate_limit_headers,
    refilled,
    seconds_until,
)
from sdfleet.jobs.webhooks import new_webhook_secret
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.store import Affinity, Buckets, CompletedJob, JobStore, LeaseAnswer, OutboxMessage, SqlTx, Tenant

log = logging.getLogger("sdfleet.jobs")

Clock = Callable[[], float]
EventRow = tuple[str, str, EventType, dict[str, Any], float]
UNSERVABLE_PREFIX = "no worker"


@dataclass(slots=True)
class JobRequest:
    """A validated request to run one job."""

    kind: JobKind
    spec: GenerationSpec | LoraTrainSpec
    priority: int = 0
    idempotency_key: str | None = None
    webhook_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    arch: str | None = None


@dataclass(slots=True)
class Submitted:
    """The job a request produced, and whether it is new (False: an idempotent resubmit)."""

    job: Job
    created: bool


@dataclass(slots=True)
class Registration:
    """What a worker tells about itself when it registers."""

    name: str
    capabilities: Capabilities
    gpu_name: str = ""
    gpu_memory_mb: int = 0
    price_per_hour: float = 0.0
    engine: str = ""
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Beat:
    """A worker's word on one job it holds."""

    job_id: str
    epoch: int
    step: int = 0
    total: int = 0
    info: dict[str, float] | None = None  # training: loss, it_per_s, eta_seconds


@dataclass(slots=True)
class BeatAnswer:
    """What the orchestrator answers for one job in a heartbeat: continue, cancel, or lost."""

    job_id: str
    epoch: int
    action: str


@dataclass(slots=True)
class OutputReport:
    """One output a worker has stored (``blob_key``) or sends inline (``data``)."""

    index: int
    content_type: str
    size: int
    blob_key: str
    seed: int | None = None
    infotext: str | None = None
    sha256: str | None = None


@dataclass(slots=True)
class Completion:
    """A worker's report that a job finished successfully."""

    job_id: str
    epoch: int
    outputs: list[OutputReport]
    engine_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CompletionResult:
    """``accepted`` (recorded now), ``duplicate`` (recorded before, by this same epoch) or ``stale``."""

    job_id: str
    status: str
    message: str = ""


@dataclass(slots=True)
class ClaimResult:
    """Jobs handed to a worker by one claim, with the lease they hold."""

    jobs: list[Job]
    lease_seconds: float
    worker_state: WorkerState


def output_key(job: Job, epoch: int, index: int, content_type: str) -> str:
    """The blob key of one output. The epoch is part of it, so a zombie's upload never overwrites
    the accepted one."""
    ext = OUTPUT_EXTENSIONS.get(content_type, "bin")
    return f"outputs/{job.tenant}/{job.id}/{epoch}-{index}.{ext}"


LORA_CONTENT_TYPE = "application/vnd.safetensors"
OUTPUT_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    LORA_CONTENT_TYPE: "safetensors",
}


def requirements_of(kind: JobKind, spec: GenerationSpec | LoraTrainSpec, arch: str | None) -> Requirements:
    """What a worker must offer to take the job (training: the kind, the base model's architecture and
    resolution² × batch as pixels)."""
    if isinstance(spec, LoraTrainSpec):
        pixels = spec.resolution * spec.resolution * spec.batch_size
        return Requirements(kind=kind, arch=arch, pixels=pixels, features=Feature.NONE, model=spec.base_model)
    return Requirements.for_spec(kind, spec, arch)


def checkpoint_key(job: Job, epoch: int, step: int) -> str:
    """The blob key of one training checkpoint (the epoch in it: a zombie never overwrites a newer one)."""
    return f"checkpoints/{job.tenant}/{job.id}/{epoch}-{step:08d}.safetensors"


@dataclass(slots=True)
class CheckpointRecorded:
    """A checkpoint recorded on a job: the steps kept, the blob keys no longer kept (to delete)."""

    job: Job
    kept: list[int]
    dropped: list[str]


def output_key_matches(key: str, job_id: str, epoch: int, index: int) -> bool:
    """Whether ``key`` is an output key of this job, epoch and index (its tenant part is checked
    against the job itself when the completion is recorded)."""
    parts = key.split("/")
    return (
        len(parts) == 4
        and parts[0] == "outputs"
        and parts[2] == job_id
        and parts[3].split(".", 1)[0] == f"{epoch}-{index}"
    )


@dataclass(slots=True)
class Effects:
    """What a transaction asks of this process once it has committed (wake-ups, metrics)."""

    work: int = 0  # jobs that became claimable
    webhooks: bool = False
    jobs: set[str] = field(default_factory=set)


TENANT_CACHE_SECONDS = 5.0
SEEN_WRITE_SECONDS = 5.0
WARM_INDEX_SECONDS = 2.0  # how long a replica trusts its copy of the other workers' warm sets
PRICING_SECONDS = 60.0  # how long a replica prices jobs from one read of the recorded engine times


class JobService:
    """The use cases of the job system. Stateless: every replica can serve every call.

    Each public method is ``async`` and runs its transaction as one plain function in the store's
    thread (``_…_tx`` methods take the ``SqlTx`` first); effects on this process (waking long polls
    and event streams) are applied after the commit.
    """

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        clock: Clock = time.time,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.metrics = metrics or Metrics()
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        # per replica: when this worker's liveness was last written, and what it reported then
        # (loaded models, current jobs, cached models)
        self._seen: dict[str, tuple[float, list[str] | None, list[str] | None, list[str] | None]] = {}
        self._warm: tuple[float, WarmIndex] | None = None  # (refresh after, the live workers' warm sets)
        self._prices: tuple[float, Pricing] | None = None  # (refresh after, GPU-second prices)

    def _apply(self, fx: Effects) -> None:
        if fx.work:
            self.notifier.work_available(fx.work)
        if fx.webhooks:
            self.notifier.webhooks_queued()
        if fx.jobs:
            self.notifier.job_changed(fx.jobs)

    # ================================================================ tenants
    async def ensure_tenant(self, tenant_id: str) -> Tenant:
        """The tenant row, created (with a new webhook secret) on first use."""
        tenant = await self.store.read(lambda tx: tx.get_tenant(tenant_id))
        if tenant is not None:
            return tenant

        def create(tx: SqlTx) -> Tenant:
            existing = tx.get_tenant(tenant_id)
            if existing is not None:
                return existing
            row = Tenant(
                id=tenant_id, webhook_url=None, webhook_secret=new_webhook_secret(), created_at=self.clock()
            )
            tx.insert_tenant(row)  # does nothing when another replica created it meanwhile
            return tx.get_tenant(tenant_id) or row

        self._tenants.pop(tenant_id, None)
        return await self.store.write(create)

    def _tenant(self, tx: SqlTx, tenant_id: str) -> Tenant | None:
        """A tenant's row for webhook routing, cached for a few seconds (read on every transition)."""
        now = time.monotonic()
        cached = self._tenants.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        tenant = tx.get_tenant(tenant_id)
        if len(self._tenants) > 10_000:
            self._tenants.clear()
        self._tenants[tenant_id] = (now + TENANT_CACHE_SECONDS, tenant)
        return tenant

    async def set_tenant_webhook(self, tenant_id: str, url: str | None) -> Tenant:
        await self.ensure_tenant(tenant_id)

        def update(tx: SqlTx) -> Tenant:
            tx.update_tenant(tenant_id, webhook_url=url)
            tenant = tx.get_tenant(tenant_id)
            assert tenant is not None
            return tenant

        self._tenants.pop(tenant_id, None)
        return await self.store.write(update)

    # ================================================================ submit / read / cancel
    async def submit(self, tenant: str, requests: Sequence[JobRequest]) -> list[Submitted]:
        """Store new jobs (all or none). A request whose idempotency key this tenant used before
        returns the existing job instead of creating one."""
        limit = self.settings.limits.max_jobs_per_batch
        if not requests:
            raise ValidationError("no jobs to submit", field="jobs")
        if len(requests) > limit:
            raise ValidationError(f"{len(requests)} jobs in one batch, the limit is {limit}", field="jobs")
        keys = [r.idempotency_key for r in requests if r.idempotency_key]
        if len(set(keys)) != len(keys):
            raise ValidationError(
                "the same idempotency_key appears twice in one batch", field="idempotency_key"
            )
        row = await self.ensure_tenant(tenant)
        limits = self._limits_of(row) if self.settings.quotas.enabled else None
        gpu_costs = await self._gpu_costs(limits, requests)
        now = self.clock()
        fx = Effects()

        def tx_fn(tx: SqlTx) -> list[Submitted]:
            existing = tx.jobs_by_idempotency_key(tenant, keys)
            out: list[Submitted] = []
            new_jobs: list[Job] = []
            charge = 0.0
            for i, req in enumerate(requests):
                if req.idempotency_key and req.idempotency_key in existing:
                    out.append(Submitted(existing[req.idempotency_key], created=False))
                    continue
                charge += gpu_costs[i] if gpu_costs else 0.0
                job = Job(
                    id=new_id("j"),
                    tenant=tenant,
                    kind=req.kind,
                    state=JobState.QUEUED,
                    spec=req.spec.model_dump(mode="json"),
                    priority=req.priority,
                    created_at=now,
                    updated_at=now,
                    queued_at=now,
                    requirements=requirements_of(req.kind, req.spec, req.arch),
                    idempotency_key=req.idempotency_key,
                    webhook_url=req.webhook_url,
                    labels=req.labels,
                )
                new_jobs.append(job)
                out.append(Submitted(job, created=True))
            if new_jobs and limits is not None:
                self._charge(tx, tenant, limits, len(new_jobs), charge, now)
            uses = {j.id: [n for n in named_models(j.spec) if n != j.requirements.model] for j in new_jobs}
            tx.insert_jobs(new_jobs, {k: v for k, v in uses.items() if v})
            tx.insert_events([(j.id, tenant, EventType.QUEUED, {"state": "queued"}, now) for j in new_jobs])
            self._queue_webhooks(tx, fx, new_jobs, "job.queued", now, only_explicit=True)
            fx.work = len(new_jobs)
            return out

        out = await self.store.write(tx_fn)
        created = sum(1 for s in out if s.created)
        if created:
            self.metrics.submitted.inc(created)
        self._apply(fx)
        return out

    # ================================================================ quotas and rate limits (jobs.quotas)
    def _limits_of(self, tenant: Tenant) -> TenantLimits:
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

    async def _gpu_costs(self, limits: TenantLimits | None, requests: Sequence[JobRequest]) -> list[float]:
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

    def _charge(
        self, tx: SqlTx, tenant: str, limits: TenantLimits, jobs: int, gpu: float, now: float
    ) -> None:
        """Charge a submit of ``jobs`` new jobs (``gpu`` estimated GPU seconds) to the tenant's
        buckets, all or nothing, in the submit's transaction — or refuse it (:class:`RateLimited`,
        429; :class:`LimitExceeded`, 422, for what no wait can fix). The debit holds the tenant's row,
        so the live-job count after it sees every earlier submit of the tenant on any replica."""
        if limits.rate is not None and jobs > limits.burst:
            raise LimitExceeded(
                f"{jobs} jobs in one submit, this tenant's burst is {limits.burst:g}: split the batch",
                field="jobs",
                details={"limit": "burst", "allowed": limits.burst},
            )
        budget = limits.gpu_seconds_per_day
        if budget is not None and gpu > budget:
            raise LimitExceeded(
                f"the submit is estimated at {gpu:.1f} GPU seconds, more than the daily budget of {budget:g}",
                field="jobs",
                details={"limit": "gpu_seconds_per_day", "estimate": round(gpu, 3), "allowed": budget},
            )
        rate = (limits.rate, limits.burst, float(jobs)) if limits.rate is not None else None
        gpu_bucket = (budget / DAY_SECONDS, budget, gpu) if budget is not None else None
        if rate is not None or gpu_bucket is not None:
            if not tx.debit_buckets(tenant, now, rate=rate, gpu=gpu_bucket):
                raise self._refusal(tx, tenant, limits, jobs, gpu, now)
        elif limits.max_concurrent is not None:
            tx.lock_tenant(tenant)
        top = limits.max_concurrent
        if top is not None:
            live = tx.count_live_jobs(tenant)
            if live + jobs > top:
                log.info("quota.refused tenant=%s limit=max_concurrent live=%d jobs=%d", tenant, live, jobs)
                raise RateLimited(
                    f"tenant {tenant} has {live} jobs queued or running, the limit is {top}: "
                    f"{jobs} more must wait until some finish",
                    field="jobs",
                    details={"limit": "max_concurrent", "allowed": top, "live": live},
                    headers=rate_limit_headers(
                        top, top - live, CONCURRENCY_RETRY_SECONDS, CONCURRENCY_RETRY_SECONDS
                    ),
                )

    @staticmethod
    def _refusal(
        tx: SqlTx, tenant: str, limits: TenantLimits, jobs: int, gpu: float, now: float
    ) -> RateLimited:
        """Which bucket could not pay, and when it will."""
        b = tx.get_buckets(tenant)
        if b is not None and limits.rate is not None:
            have = refilled(b.rate_tokens, b.rate_ts, limits.rate, limits.burst, now)
            if have < jobs:
                wait = seconds_until(have, jobs, limits.rate)
                log.info("quota.refused tenant=%s limit=rate jobs=%d wait=%.2f", tenant, jobs, wait)
                return RateLimited(
                    f"tenant {tenant} may submit {limits.rate:g} jobs per second (bursts of {limits.burst:g}): "
                    f"{jobs} more in {wait:.1f} s",
                    field="jobs",
                    details={"limit": "rate", "retry_after": round(wait, 3), "available": round(have, 3)},
                    headers=rate_limit_headers(
                        limits.burst, have, seconds_until(have, limits.burst, limits.rate), wait
                    ),
                )
        budget = limits.gpu_seconds_per_day or 0.0
        have = refilled(b.gpu_tokens, b.gpu_ts, budget / DAY_SECONDS, budget, now) if b else 0.0
        wait = seconds_until(have, gpu, budget / DAY_SECONDS)
        log.info("quota.refused tenant=%s limit=gpu_seconds_per_day gpu=%.2f wait=%.0f", tenant, gpu, wait)
        return RateLimited(
            f"tenant {tenant}'s GPU budget is {budget:g} s per day and {have:.1f} s are left now: "
            f"this submit ({gpu:.1f} s) fits in {wait:.0f} s",
            field="jobs",
            details={
                "limit": "gpu_seconds_per_day",
                "retry_after": round(wait, 3),
                "available": round(have, 3),
            },
            headers=rate_limit_headers(budget, have, seconds_until(have, budget, budget / DAY_SECONDS), wait),
        )

    async def quota_status(self, tenant_id: str) -> dict[str, Any]:
        """A tenant's limits and what is left of each (``None``: unlimited)."""
        await self.ensure_tenant(tenant_id)
        now = self.clock()

        def read(tx: SqlTx) -> tuple[Tenant | None, Buckets | None, int]:
            return tx.get_tenant(tenant_id), tx.get_buckets(tenant_id), tx.count_live_jobs(tenant_id)

        tenant, buckets, live = await self.store.read(read)
        assert tenant is not None
        return quota_view(self._limits_of(tenant), buckets, live, now, enforced=self.settings.quotas.enabled)

    async def list_tenants(self) -> list[tuple[Tenant, TenantLimits]]:
        tenants = await self.store.read(lambda tx: tx.list_tenants())
        return [(t, self._limits_of(t)) for t in tenants]

    async def set_tenant_limits(self, tenant_id: str, changes: dict[str, Any]) -> TenantLimits:
        """Change a tenant's limits: a value sets it (``None``: unlimited), :data:`DEFAULT` goes back
        to the settings' default. Creates the tenant when it does not exist yet; its buckets start
        full. Takes effect at the tenant's next submit on every replica."""
        for name, value in changes.items():
            if value is not DEFAULT:
                try:
                    check_override(name, value)
                except ValueError as exc:
                    raise ValidationError(str(exc), field=name) from exc
        await self.ensure_tenant(tenant_id)

        def tx_fn(tx: SqlTx) -> Tenant:
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

        tenant = await self.store.write(tx_fn)
        self._tenants.pop(tenant_id, None)
        log.info("quota.changed tenant=%s limits=%s", tenant_id, json.dumps(tenant.limits, sort_keys=True))
        return self._limits_of(tenant)

    async def get_job(self, job_id: str, tenant: str | None) -> Job:
        """A job by id; ``tenant=None`` means an admin who sees every tenant's jobs."""
        job = await self.store.read(lambda tx: tx.get_job(job_id))
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"no job {job_id!r}", field="job_id")
        return job

    async def cancel(self, job_id: str, tenant: str | None) -> Job:
        """Cancel a job: at once when queued, through the worker's next heartbeat when running."""
        now = self.clock()
        fx = Effects(jobs={job_id})

        def tx_fn(tx: SqlTx) -> Job:
            job = tx.get_job(job_id, lock=True)
            if job is None or (tenant is not None and job.tenant != tenant):
                raise NotFound(f"no job {job_id!r}", field="job_id")
            if job.state.terminal:
                return job
            if job.state == JobState.QUEUED:
                self._finish(
                    tx, fx, job, JobState.CANCELED, now, code="canceled", message="canceled by the client"
                )
            else:
                tx.update_job(job.id, cancel_requested=True, updated_at=now)
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        job = await self.store.write(tx_fn)
        self._apply(fx)
        return job

    # ================================================================ workers
    async def register_worker(self, tenant: str, reg: Registration) -> WorkerInfo:
        """Record a new worker (a restarted process registers again and gets a new id)."""
        now = self.clock()
        worker = WorkerInfo(
            id=new_id("w"),
            name=reg.name,
            tenant=tenant,
            state=WorkerState.ACTIVE,
            capabilities=reg.capabilities,
            gpu_name=reg.gpu_name,
            gpu_memory_mb=reg.gpu_memory_mb,
            price_per_hour=reg.price_per_hour,
            engine=reg.engine,
            version=reg.version,
            registered_at=now,
            last_seen_at=now,
            info=reg.info,
        )
        await self.store.write(lambda tx: tx.insert_worker(worker))
        log.info("worker.registered worker_id=%s name=%s engine=%s", worker.id, worker.name, worker.engine)
        return worker

    def _seen_is_stale(
        self,
        worker_id: str,
        now: float,
        loaded_models: list[str] | None,
        current_jobs: list[str] | None = None,
        cached_models: list[str] | None = None,
    ) -> bool:
        seen = self._seen.get(worker_id)
        return (
            seen is None
            or now - seen[0] > SEEN_WRITE_SECONDS
            or (loaded_models is not None and loaded_models != seen[1])
            or (current_jobs is not None and current_jobs != seen[2])
            or (cached_models is not None and cached_models != seen[3])
        )

    def _touch_worker(
        self,
        tx: SqlTx,
        worker_id: str,
        now: float,
        loaded_models: list[str] | None,
        current_jobs: list[str] | None = None,
        cached_models: list[str] | None = None,
    ) -> None:
        """Record that the worker is alive (and what it holds) — at most every few seconds unless
        something changed: an idle fleet's long polls should not all be database writes."""
        if not self._seen_is_stale(worker_id, now, loaded_models, current_jobs, cached_models):
            return
        values: dict[str, Any] = {"last_seen_at": now}
        if loaded_models is not None:
            values["loaded_models"] = loaded_models
        if current_jobs is not None:
            values["current_jobs"] = current_jobs
        if cached_models is not None:
            values["cached_models"] = cached_models
        tx.update_worker(worker_id, **values)
        if len(self._seen) > 100_000:
            self._seen.clear()
        previous = self._seen.get(worker_id)
        self._seen[worker_id] = (
            now,
            loaded_models if loaded_models is not None else (previous[1] if previous else None),
            current_jobs if current_jobs is not None else (previous[2] if previous else None),
            cached_models if cached_models is not None else (previous[3] if previous else None),
        )

    def _warm_index(self, tx: SqlTx, now: float) -> WarmIndex:
        """The live, active workers' warm sets, re-read from the worker rows every few seconds."""
        if self._warm is not None and self._warm[0] > now:
            return self._warm[1]
        index = WarmIndex()
        for w in tx.list_workers(seen_since=now - self.settings.worker_offline_after):
            if w.state == WorkerState.ACTIVE:
                index.set(w.id, warm_names(w.loaded_models), warm_names(w.cached_models))
        self._warm = (now + WARM_INDEX_SECONDS, index)
        return index

    def _affinity(
        self,
        tx: SqlTx,
        worker: WorkerInfo,
        now: float,
        loaded_models: list[str] | None,
        cached_models: list[str] | None,
    ) -> Affinity | None:
        """What this worker's claim is scored against (None: affinity is off)."""
        if not self.settings.affinity_enabled:
            return None
        index = self._warm_index(tx, now)
        loaded = warm_names(loaded_models if loaded_models is not None else worker.loaded_models)
        cached = warm_names(cached_models if cached_models is not None else worker.cached_models)
        index.set(worker.id, loaded, cached)
        loaded_else, cached_else = index.elsewhere(worker.id)
        return Affinity(
            loaded=sorted(loaded),
            cached=sorted(cached - loaded),
            loaded_elsewhere=loaded_else,
            cached_elsewhere=cached_else,
            aged_before=now - self.settings.affinity_max_wait_seconds,
            window=self.settings.affinity_window,
        )

    @staticmethod
    def _worker(tx: SqlTx, worker_id: str, tenant: str | None) -> WorkerInfo:
        worker = tx.get_worker(worker_id)
        if worker is None or (tenant is not None and worker.tenant != tenant):
            raise NotFound(f"no worker {worker_id!r}: register first", field="worker_id")
        return worker

    async def stop_worker(self, worker_id: str, tenant: str | None) -> None:
        def tx_fn(tx: SqlTx) -> None:
            self._worker(tx, worker_id, tenant)
            tx.update_worker(worker_id, state=WorkerState.STOPPED, current_jobs=[])

        await self.store.write(tx_fn)

    # ================================================================ claim
    async def claim(
        self,
        worker_id: str,
        tenant: str | None,
        *,
        max_jobs: int = 1,
        wait: float = 0.0,
        loaded_models: list[str] | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
        cached_models: list[str] | None = None,
    ) -> ClaimResult:
        """Hand up to ``max_jobs`` jobs to a worker, waiting up to ``wait`` seconds for work.
        ``gone`` tells whether the caller hung up (then the wait ends without claiming).
        ``loaded_models``/``cached_models``: the worker's warm set (in memory / on disk), which
        the claim prefers (None: as last reported)."""
        max_jobs = max(1, min(max_jobs, self.settings.claim_max_jobs))
        deadline = time.monotonic() + max(0.0, min(wait, self.settings.claim_max_wait))
        first = True
        while True:
            if not first and gone is not None and await gone():
                return ClaimResult([], self.settings.lease_seconds, WorkerState.ACTIVE)
            first = False
            result = await self._claim_once(worker_id, tenant, max_jobs, loaded_models, cached_models)
            remaining = deadline - time.monotonic()
            if result.jobs or result.worker_state != WorkerState.ACTIVE or remaining <= 0:
                return result
            # wake on new work in this process; re-check now and then for other replicas and
            # for leases that expire without anyone saying so
            await self.notifier.wait_for_work(min(remaining, self.settings.poll_seconds))

    async def _claim_once(
        self,
        worker_id: str,
        tenant: str | None,
        max_jobs: int,
        loaded_models: list[str] | None,
        cached_models: list[str] | None = None,
    ) -> ClaimResult:
        now = self.clock()
        lease = self.settings.lease_seconds
        fx = Effects()

        def tx_fn(tx: SqlTx) -> tuple[list[Job], WorkerState]:
            self._expire_leases_tx(tx, fx, now)
            worker = self._worker(tx, worker_id, tenant)
            self._touch_worker(tx, worker_id, now, loaded_models, cached_models=cached_models)
            if worker.state != WorkerState.ACTIVE:  # quarantined, or said it stopped
                return [], worker.state
            claimed = tx.claim_jobs(
                worker_id=worker_id,
                caps=worker.capabilities,
                limit=max_jobs,
                now=now,
                lease_until=now + lease,
                affinity=self._affinity(tx, worker, now, loaded_models, cached_models),
                default_weight=self.settings.quotas.weight,
                share_memory=self.settings.quotas.fair_share_memory_seconds,
            )
            if claimed:
                tx.insert_attempts(
                    [
                        {
                            "job_id": j.id,
                            "worker_id": worker_id,
                            "epoch": j.lease_epoch,
                            "started_at": now,
                            "last_heartbeat_at": now,
                            "outcome": AttemptOutcome.RUNNING.value,
                            "price_per_hour": worker.price_per_hour,
                        }
                        for j in claimed
                    ]
                )
                started = {"state": "running", "worker_id": worker_id, "worker": worker.name}
                tx.insert_events(
                    [
                        (j.id, j.tenant, EventType.STARTED, {**started, "epoch": j.lease_epoch}, now)
                        for j in claimed
                    ]
                )
                self._queue_webhooks(tx, fx, claimed, "job.started", now)
                fx.jobs.update(j.id for j in claimed)
            return claimed, worker.state

        claimed, state = await self.store.write(tx_fn)
        if claimed:
            self.metrics.claimed.inc(len(claimed))
            for j in claimed:
                self.metrics.queue_wait.observe(max(0.0, now - j.created_at))
        self._apply(fx)
        return ClaimResult(claimed, lease, state)

    async def reject_claimed(self, worker_id: str, rejected: Sequence[tuple[str, int, str]]) -> None:
        """Fail claimed ``(job id, epoch, reason)`` jobs whose claim reply could not be built (data
        stored before it was validated, a reference that no longer resolves): each fails alone as
        ``invalid_input`` — the job's fault, counted against no worker — and its lease is let go,
        so the rest of the claim goes out and the queue moves on."""
        if not rejected:
            return
        now = self.clock()
        fx = Effects()

        def tx_fn(tx: SqlTx) -> None:
            for job_id, epoch, reason in rejected:
                job = tx.get_job(job_id, lock=True)
                if not policy.holds(job, worker_id, epoch) or job is None:
                    continue
                message = f"the job cannot be handed to a worker: {reason}"[:2000]
                tx.end_attempt(
                    job.id,
                    epoch,
                    outcome=AttemptOutcome.FAILED,
                    ended_at=now,
                    error_code=policy.INVALID_INPUT,
                    error_message=message,
                    refunded=True,
                )
                tx.update_job(job.id, failures=job.failures + 1)
                self._finish(tx, fx, job, JobState.FAILED, now, code=policy.INVALID_INPUT, message=message)
                log.warning(
                    "job.claim_reply_failed job_id=%s worker_id=%s reason=%s", job.id, worker_id, reason
                )

        await self.store.write(tx_fn)
        self._apply(fx)

    async def held_jobs(
        self, worker_id: str, tenant: str | None, pairs: Sequence[tuple[str, int]]
    ) -> dict[str, Job]:
        """The jobs of ``(job id, epoch)`` pairs that this worker (of ``tenant``) holds at that epoch
        now (a read): what a worker may write blobs for before its report is recorded. The report's
        own transaction checks again; a job not held now never becomes held at that epoch again."""

        def read(tx: SqlTx) -> dict[str, Job]:
            self._worker(tx, worker_id, tenant)
            wanted = dict(pairs)
            found = tx.get_jobs(sorted(wanted)) if wanted else []
            return {j.id: j for j in found if policy.holds(j, worker_id, wanted[j.id])}

        return await self.store.read(read)

    # ================================================================ heartbeat
    async def heartbeat(
        self,
        worker_id: str,
        tenant: str | None,
        beats: Sequence[Beat],
        loaded_models: list[str] | None = None,
        cached_models: list[str] | None = None,
    ) -> tuple[list[BeatAnswer], WorkerState]:
        """Extend the leases of the jobs a worker holds; record progress; answer cancel or lost."""
        now = self.clock()
        if not beats and not self._seen_is_stale(worker_id, now, loaded_models, cached_models=cached_models):
            # an idle worker's beat: nothing to write, only its state to tell (a read)
            idle = await self.store.read(lambda tx: self._worker(tx, worker_id, tenant))
            return [], idle.state

        def tx_fn(tx: SqlTx) -> tuple[dict[tuple[str, int], LeaseAnswer], WorkerState]:
            worker = self._worker(tx, worker_id, tenant)
            answers = tx.extend_leases(
                worker_id,
                [(b.job_id, b.epoch, b.step, b.total) for b in beats],
                now,
                now + self.settings.lease_seconds,
            )
            self._touch_worker(
                tx,
                worker_id,
                now,
                loaded_models,
                current_jobs=[b.job_id for b in beats],
                cached_models=cached_models,
            )
            for b in beats:
                if b.info and answers[(b.job_id, b.epoch)].held:
                    tx.update_job(b.job_id, expect_epoch=b.epoch, progress_info=b.info)
            tx.insert_events(
                [
                    (
                        b.job_id,
                        answers[(b.job_id, b.epoch)].tenant,
                        EventType.PROGRESS,
                        {"step": b.step, "total": b.total, **(b.info or {})},
                        now,
                    )
                    for b in beats
                    if answers[(b.job_id, b.epoch)].held
                    and b.total
                    and b.step != answers[(b.job_id, b.epoch)].previous_step
                ]
            )
            return answers, worker.state

        raw, state = await self.store.write(tx_fn)
        answers = []
        for b in beats:
            a = raw[(b.job_id, b.epoch)]
            answers.append(
                BeatAnswer(
                    b.job_id, b.epoch, "lost" if not a.held else ("cancel" if a.cancel else "continue")
                )
            )
        if beats:
            self.notifier.job_changed([b.job_id for b in beats])
        return answers, state

    # ================================================================ complete
    async def complete(
        self, worker_id: str, tenant: str | None, completions: Sequence[Completion]
    ) -> list[CompletionResult]:
        """Record finished jobs, exactly once each. A stale epoch changes nothing."""
        now = self.clock()
        fx = Effects()

        def tx_fn(tx: SqlTx) -> list[CompletionResult]:
            worker = self._worker(tx, worker_id, tenant)
            jobs_by_id = {j.id: j for j in tx.get_jobs([c.job_id for c in completions], lock=True)}
            results: list[CompletionResult] = []
            finished: list[CompletedJob] = []
            outputs: list[tuple[Output, str]] = []
            events: list[EventRow] = []
            done_jobs: list[Job] = []
            for c in completions:
                job = jobs_by_id.get(c.job_id)
                verdict = self._completion_verdict(job, c, worker_id)
                if verdict is not None or job is None:
                    results.append(verdict or CompletionResult(c.job_id, "stale", "no such job"))
                    continue
                self._check_outputs(job, c)
                cost = c.engine_seconds * worker.price_per_hour / 3600.0
                job.engine_seconds += c.engine_seconds
                job.cost_usd += cost
                job.state = JobState.SUCCEEDED
                job.finished_at = now
                finished.append(
                    CompletedJob(
                        job=job,
                        epoch=c.epoch,
                        engine_seconds=c.engine_seconds,
                        cost=cost,
                        result={**c.result, "timings": c.timings},
                        timings=c.timings,
                    )
                )
                for o in c.outputs:
                    outputs.append(
                        (
                            Output(
                                job_id=job.id,
                                index=o.index,
                                blob_key=o.blob_key,
                                content_type=o.content_type,
                                size=o.size,
                                seed=o.seed,
                                infotext=o.infotext,
                                created_at=now,
                                sha256=o.sha256,
                            ),
                            job.tenant,
                        )
                    )
                    events.append(
                        (job.id, job.tenant, EventType.OUTPUT, {"index": o.index, "seed": o.seed}, now)
                    )
                events.append(
                    (
                        job.id,
                        job.tenant,
                        EventType.FINISHED,
                        {"state": "succeeded", "images": len(c.outputs), "cost_usd": job.cost_usd},
                        now,
                    )
                )
                if job.kind == JobKind.TRAIN_LORA:
                    finished[-1].result.update(self._register_lora(tx, job, c, now))
                    job.result = finished[-1].result
                done_jobs.append(job)
                fx.jobs.add(job.id)
                results.append(CompletionResult(job.id, "accepted"))
                self.metrics.job_latency.observe(max(0.0, now - job.created_at))
            if finished:
                # the rows are locked (or the database is, on SQLite) and were checked above:
                # one statement of each kind for the whole batch
                tx.complete_jobs(finished, worker_id, now)
                tx.insert_outputs_of(outputs)
                tx.insert_events(events)
                self._queue_webhooks(tx, fx, done_jobs, "job.finished", now)
                tx.add_worker_counters(
                    worker_id, done=len(finished), engine_seconds=sum(f.engine_seconds for f in finished)
                )
            return results

        results = await self.store.write(tx_fn)
        self.metrics.completed.inc(sum(1 for r in results if r.status == "accepted"))
        self._apply(fx)
        return results

    def _register_lora(self, tx: SqlTx, job: Job, c: Completion, now: float) -> dict[str, Any]:
        """A finished training job's LoRA (output 0) into the registry under the job's name, in the
        completion's transaction: ``<lora:name:1>`` works as soon as the job is succeeded. Workers fetch
        it from the blob store (``blob:`` source: a signed URL with the claim)."""
        lora = next((o for o in c.outputs if o.index == 0), None)
        name = str(job.spec.get("name") or f"lora-{job.id}")
        if lora is None or lora.content_type != LORA_CONTENT_TYPE or not lora.sha256:
            raise ValidationError(
                "a training job's output 0 must be its LoRA (.safetensors)", field="outputs"
            )
        requested = name
        registered, problem = lora_registration_name(tx.get_models, requested, job.tenant, job.id)
        if problem is not None:
            log.warning("training.renamed job_id=%s name=%s requested=%s", job.id, registered, requested)
        if registered is None:
            return {"lora": {"name": None, "problem": problem, "sha256": lora.sha256, "size": lora.size}}
        name = registered
        trigger = job.spec.get("trigger_word")
        record = ModelRecord(
            name=name,
            kind=ModelKind.LORA,
            arch=job.requirements.arch,
            source=f"blob:{lora.blob_key}",
            sha256=lora.sha256.lower(),
            size=lora.size,
            trigger_words=[trigger] if isinstance(trigger, str) and trigger else [],
            description=f"trained on {job.spec.get('base_model')}",
            created_at=now,
        )
        tx.upsert_model(record)
        log.info("training.registered job_id=%s name=%s sha256=%s", job.id, name, record.sha256)
        lora_result: dict[str, Any] = {
            "name": name,
            "sha256": record.sha256,
            "size": record.size,
            "source": record.source,
        }
        if problem is not None:
            lora_result.update(requested_name=requested, problem=problem)
        return {"lora": lora_result}

    # ================================================================ training checkpoints
    async def record_checkpoint(
        self,
        worker_id: str,
        tenant: str | None,
        job_id: str,
        epoch: int,
        *,
        step: int,
        key: str,
        size: int,
        sha256: str | None = None,
    ) -> CheckpointRecorded:
        """A worker stored a training checkpoint: record it on the job (fenced by the lease epoch; a
        stale epoch is :class:`StaleLease`), keep the newest ``keep_checkpoints``, emit a
        ``checkpoint`` event and a ``job.checkpoint`` webhook. The caller deletes ``dropped`` blobs."""
        now = self.clock()
        fx = Effects(jobs={job_id})

        def tx_fn(tx: SqlTx) -> CheckpointRecorded:
            self._worker(tx, worker_id, tenant)
            job = self._held_job(tx, job_id, epoch, worker_id)
            if job.kind != JobKind.TRAIN_LORA:
                raise ValidationError(f"job {job_id} is not a training job", field="job_id")
            if key != checkpoint_key(job, epoch, step):
                raise ValidationError(
                    f"checkpoint must be stored at {checkpoint_key(job, epoch, step)!r}", field="key"
                )
            keep = max(1, int(job.spec.get("keep_checkpoints") or 1))
            entries = [c for c in job.checkpoints if c.get("key") != key]
            entries.append(
                {"step": step, "key": key, "size": size, "sha256": sha256, "epoch": epoch, "at": now}
            )
            entries.sort(key=lambda c: (int(c["step"]), int(c.get("epoch", 0))))
            kept, dropped = entries[-keep:], entries[:-keep]
            tx.update_job(job.id, checkpoints=kept, updated_at=now)
            job.checkpoints = kept
            data = {"step": step, "size": size, "kept": [c["step"] for c in kept]}
            tx.insert_events([(job.id, job.tenant, EventType.CHECKPOINT, data, now)])
            self._queue_webhooks(tx, fx, [job], "job.checkpoint", now, extra={"checkpoint": data})
            return CheckpointRecorded(job, [int(c["step"]) for c in kept], [str(c["key"]) for c in dropped])

        recorded = await self.store.write(tx_fn)
        self._apply(fx)
        log.info(
            "training.checkpoint job_id=%s epoch=%d step=%d kept=%s dropped=%d",
            job_id,
            epoch,
            step,
            recorded.kept,
            len(recorded.dropped),
        )
        return recorded

    @staticmethod
    def _completion_verdict(job: Job | None, c: Completion, worker_id: str) -> CompletionResult | None:
        """Why a completion cannot be accepted (None: it can). A job whose lease ran out but that
        nobody took since still has this epoch: its result is accepted rather than wasted."""
        if job is None:
            return CompletionResult(c.job_id, "stale", "no such job")
        if job.lease_epoch != c.epoch or job.lease_worker != worker_id:
            return CompletionResult(
                c.job_id, "stale", f"lease epoch {c.epoch} is not current ({job.lease_epoch})"
            )
        if job.state == JobState.SUCCEEDED:
            return CompletionResult(c.job_id, "duplicate", "already recorded")
        if job.state not in (JobState.RUNNING, JobState.QUEUED):
            return CompletionResult(c.job_id, "stale", f"job is {job.state.value}")
        return None

    @staticmethod
    def _check_outputs(job: Job, c: Completion) -> None:
        seen: set[int] = set()
        for o in c.outputs:
            if o.index in seen:
                raise ValidationError(f"output index {o.index} appears twice", field="outputs")
            seen.add(o.index)
            expected = output_key(job, c.epoch, o.index, o.content_type)
            if o.blob_key != expected:
                raise ValidationError(f"output {o.index} must be stored at {expected!r}", field="outputs")

    # ================================================================ fail / release
    async def fail(
        self,
        worker_id: str,
        tenant: str | None,
        job_id: str,
        epoch: int,
        *,
        code: str,
        message: str,
        retryable: bool,
        engine_seconds: float = 0.0,
    ) -> Job:
        """A worker could not run a job. Retry elsewhere within the budget; quarantine a worker
        that keeps failing distinct jobs, and give the failures it caused back to those jobs."""
        now = self.clock()
        fx = Effects(jobs={job_id})

        def tx_fn(tx: SqlTx) -> Job:
            worker, job = self._end_held_attempt(
                tx,
                worker_id,
                tenant,
                job_id,
                epoch,
                AttemptOutcome.FAILED,
                now,
                engine_seconds,
                error_code=code[:64],
                error_message=message[:2000],
            )
            attempts = tx.list_attempts(job.id)
            decision = policy.decide_failure(
                worker_id=worker_id,
                code=code[:64],
                message=message[:2000],
                retryable=retryable,
                failures=job.failures,
                max_failures=self.settings.max_failures,
                history=[
                    policy.PastFailure(a.worker_id, a.error_code, a.error_message)
                    for a in attempts
                    if a.outcome == AttemptOutcome.FAILED and a.epoch != epoch
                ],
            )
            if job.cancel_requested:
                self._finish(
                    tx, fx, job, JobState.CANCELED, now, code="canceled", message="canceled by the client"
                )
            elif decision.action == "requeue":
                self._requeue(
                    tx,
                    fx,
                    job,
                    now,
                    failures=job.failures + 1,
                    stalled=False,
                    reason=f"attempt failed on {worker.name}: {message}",
                )
            else:
                tx.update_job(job.id, failures=job.failures + 1)
                self._finish(tx, fx, job, JobState.FAILED, now, code=decision.code, message=decision.message)
            if decision.blames_worker:
                tx.add_worker_counters(worker_id, failed=1, engine_seconds=engine_seconds)
            else:
                # the job's fault: neither this failure nor the same failure on other workers counts
                # toward anyone's quarantine (the per-job ban stays: the attempts remain failed)
                absolved = decision.absolve | {worker_id}
                tx.mark_attempts_refunded(
                    [a.id for a in attempts if a.outcome == AttemptOutcome.FAILED and a.worker_id in absolved]
                )
                tx.add_worker_counters(worker_id, engine_seconds=engine_seconds)
                log.info(
                    "job.failed_by_input job_id=%s worker_id=%s code=%s absolved=%d",
                    job.id,
                    worker_id,
                    decision.code,
                    len(absolved),
                )
            self.metrics.failed_attempts.inc()
            if decision.blames_worker:
                self._maybe_quarantine(tx, fx, worker, now)
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        job = await self.store.write(tx_fn)
        self._apply(fx)
        return job

    async def release(
        self,
        worker_id: str,
        tenant: str | None,
        job_id: str,
        epoch: int,
        *,
        reason: str = "released",
        engine_seconds: float = 0.0,
    ) -> Job:
        """A worker gives a job back (graceful stop). An interruption, not a failure."""
        now = self.clock()
        fx = Effects(jobs={job_id})

        def tx_fn(tx: SqlTx) -> Job:
            worker, job = self._end_held_attempt(
                tx,
                worker_id,
                tenant,
                job_id,
                epoch,
                AttemptOutcome.RELEASED,
                now,
                engine_seconds,
                error_message=reason[:2000],
            )
            self._interrupt(tx, fx, job, now, f"released by {worker.name}: {reason}")
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        job = await self.store.write(tx_fn)
        self._apply(fx)
        return job

    def _end_held_attempt(
        self,
        tx: SqlTx,
        worker_id: str,
        tenant: str | None,
        job_id: str,
        epoch: int,
        outcome: AttemptOutcome,
        now: float,
        engine_seconds: float,
        **error: str,
    ) -> tuple[WorkerInfo, Job]:
        """Close the attempt of a job this worker holds (fenced by epoch) and charge its time."""
        worker = self._worker(tx, worker_id, tenant)
        job = self._held_job(tx, job_id, epoch, worker_id)
        cost = engine_seconds * worker.price_per_hour / 3600.0
        tx.end_attempt(
            job.id,
            epoch,
            outcome=outcome,
            ended_at=now,
            engine_seconds=engine_seconds,
            cost_usd=cost,
            **error,
        )
        job.engine_seconds += engine_seconds
        job.cost_usd += cost
        return worker, job

    @staticmethod
    def _held_job(tx: SqlTx, job_id: str, epoch: int, worker_id: str) -> Job:
        job = tx.get_job(job_id, lock=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}", field="job_id")
        if job.lease_epoch != epoch or job.lease_worker != worker_id or job.state.terminal:
            raise StaleLease(f"lease epoch {epoch} of job {job_id} is not current", field="epoch")
        return job

    def _maybe_quarantine(self, tx: SqlTx, fx: Effects, worker: WorkerInfo, now: float) -> None:
        if worker.state == WorkerState.QUARANTINED:
            return
        failed = [
            a
            for a in tx.failed_attempts_of_worker(worker.id, now - self.settings.quarantine_window)
            if not policy.is_user_error(a.error_code)
        ]
        counted = [policy.CountedFailure(a.job_id, a.error_code, a.refunded) for a in failed]
        if not policy.should_quarantine(counted, self.settings.quarantine_failures):
            return
        distinct = policy.blamed_jobs(counted)
        reason = (
            f"failed {len(distinct)} distinct jobs within {self.settings.quarantine_window:.0f} s; "
            f"last error: {failed[-1].error_message}"
        )
        tx.update_worker(
            worker.id,
            state=WorkerState.QUARANTINED,
            quarantined_until=now + self.settings.quarantine_seconds,
            quarantine_reason=reason,
        )
        tx.mark_attempts_refunded([a.id for a in failed])
        # give the failures back: each job gets its failure refunded; a job this worker failed for
        # good goes back to the queue. The per-job ban on this worker stays.
        for job in tx.get_jobs(sorted(distinct), lock=True):
            refund = sum(1 for a in failed if a.job_id == job.id)
            failures = max(0, job.failures - refund)
            if job.state == JobState.FAILED and job.lease_worker == worker.id:
                self._requeue(
                    tx,
                    fx,
                    job,
                    now,
                    failures=failures,
                    stalled=True,
                    reason=f"failure refunded: worker {worker.name} was quarantined",
                )
            else:
                tx.update_job(job.id, failures=failures)
        # jobs it still holds go back at once
        for job in tx.jobs_held_by(worker.id):
            tx.end_attempt(
                job.id,
                job.lease_epoch,
                outcome=AttemptOutcome.INTERRUPTED,
                ended_at=now,
                error_message="worker quarantined",
            )
            self._interrupt(tx, fx, job, now, f"worker {worker.name} was quarantined")
        fx.work += 1
        self.metrics.quarantines.inc()
        log.warning("worker.quarantined worker_id=%s name=%s reason=%s", worker.id, worker.name, reason)

    async def release_quarantine(self, worker_id: str) -> None:
        def tx_fn(tx: SqlTx) -> None:
            self._worker(tx, worker_id, None)
            tx.update_worker(
                worker_id, state=WorkerState.ACTIVE, quarantined_until=None, quarantine_reason=None
            )

        await self.store.write(tx_fn)
        self.notifier.work_available()

    # ================================================================ state transitions
    def _requeue(
        self,
        tx: SqlTx,
        fx: Effects,
        job: Job,
        now: float,
        *,
        failures: int | None = None,
        stalled: bool,
        reason: str,
        interruptions: int | None = None,
        keep_holder: bool = False,
    ) -> None:
        """Back to the queue. ``keep_holder``: only for a lease that ran out — the same worker may
        still take the job back (same epoch) with a late heartbeat or completion, as long as nobody
        else claimed it meanwhile. A release or a failure lets go of the job for good."""
        # the head of the queue (stalled first) at most once per job: a job that keeps coming back —
        # lost leases, refunded failures — waits its turn by age after that
        stalled = stalled and not tx.has_jumped(job.id)
        values: dict[str, Any] = {
            "state": JobState.QUEUED,
            "stalled": stalled,
            "lease_expires_at": None,
            "updated_at": now,
            "queued_at": now,
            "progress_step": 0,
            "finished_at": None,
            "error_code": None,
            "error_message": None,
            "wait_reason": reason[:500],
            "cost_usd": job.cost_usd,
            "engine_seconds": job.engine_seconds,
        }
        if stalled:
            values["jumped"] = True
        if failures is not None:
            values["failures"] = failures
        if interruptions is not None:
            values["interruptions"] = interruptions
        if not keep_holder:
            values["lease_worker"] = None
        tx.update_job(job.id, **values)
        tx.insert_events(
            [(job.id, job.tenant, EventType.REQUEUED, {"state": "queued", "reason": reason}, now)]
        )
        fx.work += 1
        fx.jobs.add(job.id)

    def _interrupt(
        self, tx: SqlTx, fx: Effects, job: Job, now: float, reason: str, *, lease_expired: bool = False
    ) -> None:
        """The job lost its worker through no fault of its own (lease expired, released)."""
        if job.cancel_requested:
            self._finish(
                tx, fx, job, JobState.CANCELED, now, code="canceled", message="canceled by the client"
            )
            return
        interruptions = job.interruptions + 1
        if interruptions > self.settings.max_interruptions:
            tx.update_job(job.id, interruptions=interruptions)
            self._finish(
                tx,
                fx,
                job,
                JobState.FAILED,
                now,
                code="too_many_interruptions",
                message=f"interrupted {interruptions} times; last: {reason}",
            )
            return
        self._requeue(
            tx,
            fx,
            job,
            now,
            stalled=True,
            reason=reason,
            interruptions=interruptions,
            keep_holder=lease_expired,
        )

    def _finish(
        self,
        tx: SqlTx,
        fx: Effects,
        job: Job,
        state: JobState,
        now: float,
        *,
        code: str | None,
        message: str | None,
    ) -> None:
        tx.update_job(
            job.id,
            state=state,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
            error_code=code,
            error_message=message,
            wait_reason=None,
            stalled=False,
            cost_usd=job.cost_usd,
            engine_seconds=job.engine_seconds,
        )
        job.state = state
        job.finished_at = now
        job.error_code = code
        job.error_message = message
        tx.insert_events(
            [
                (
                    job.id,
                    job.tenant,
                    EventType.FINISHED,
                    {"state": state.value, "error": {"code": code, "message": message}},
                    now,
                )
            ]
        )
        self._queue_webhooks(tx, fx, [job], "job.finished", now)
        fx.jobs.add(job.id)
        if state == JobState.FAILED:
            self.metrics.failed_jobs.inc()
        elif state == JobState.CANCELED:
            self.metrics.canceled.inc()

    # ================================================================ reaper
    def _expire_leases_tx(self, tx: SqlTx, fx: Effects, now: float) -> int:
        if not tx.any_expired_lease(now):
            return 0
        expired = tx.jobs_with_expired_lease(now)
        for job in expired:
            charge: dict[str, float] = {}
            if job.kind == JobKind.TRAIN_LORA:
                # a vanished trainer reports no engine time: charge the span its heartbeats covered
                for attempt in tx.list_attempts(job.id):
                    if attempt.epoch == job.lease_epoch:
                        seconds = max(0.0, attempt.last_heartbeat_at - attempt.started_at)
                        cost = seconds * attempt.price_per_hour / 3600.0
                        charge = {"engine_seconds": seconds, "cost_usd": cost}
                        job.engine_seconds += seconds
                        job.cost_usd += cost
            tx.end_attempt(
                job.id,
                job.lease_epoch,
                outcome=AttemptOutcome.INTERRUPTED,
                ended_at=now,
                error_message="lease expired",
                **charge,
            )
            self._interrupt(
                tx, fx, job, now, "the worker stopped sending heartbeats (lease expired)", lease_expired=True
            )
        if expired:
            self.metrics.lease_expiries.inc(len(expired))
            log.info("jobs.leases_expired count=%d", len(expired))
        return len(expired)

    async def expire_leases(self) -> int:
        """Re-queue (ahead of new work) every running job whose lease ran out."""
        now = self.clock()
        fx = Effects()
        count = await self.store.write(lambda tx: self._expire_leases_tx(tx, fx, now))
        self._apply(fx)
        return count

    async def check_unservable(self) -> int:
        """Say why queued jobs wait when no online worker can take them; expire those that waited
        longer than ``unservable_after``. Returns how many expired."""
        now = self.clock()

        def read(tx: SqlTx) -> tuple[list[WorkerInfo], list[tuple[str, Requirements, float, str | None]]]:
            workers = tx.list_workers(seen_since=now - self.settings.worker_offline_after)
            return [w for w in workers if w.state == WorkerState.ACTIVE], tx.queued_requirements()

        online, queued = await self.store.read(read)
        verdicts: dict[Requirements, str | None] = {}
        to_expire: list[tuple[str, str]] = []
        changes: dict[str | None, list[str]] = {}
        for job_id, req, queued_at, current in queued:
            if req not in verdicts:
                servable = any(w.capabilities.accepts(req) for w in online)
                verdicts[req] = None if servable else self._why_unservable(req, online)
            why = verdicts[req]
            if why is not None and now - queued_at > self.settings.unservable_after:
                to_expire.append((job_id, why))
            elif why is not None and why != current:
                changes.setdefault(why, []).append(job_id)
            elif why is None and current is not None and current.startswith(UNSERVABLE_PREFIX):
                changes.setdefault(None, []).append(job_id)
        if not changes and not to_expire:
            return 0
        fx = Effects()

        def write(tx: SqlTx) -> int:
            for why, ids in changes.items():
                tx.set_wait_reason(ids, why)
            expired = 0
            for job in tx.get_jobs([job_id for job_id, _ in to_expire], lock=True):
                if job.state == JobState.QUEUED:
                    why = dict(to_expire)[job.id]
                    waited = now - (job.queued_at or job.created_at)
                    self._finish(
                        tx,
                        fx,
                        job,
                        JobState.FAILED,
                        now,
                        code="expired",
                        message=f"expired after waiting {waited:.0f} s: {why}",
                    )
                    expired += 1
            return expired

        expired = await self.store.write(write)
        self._apply(fx)
        return expired

    @staticmethod
    def _why_unservable(req: Requirements, online: list[WorkerInfo]) -> str:
        if not online:
            return f"{UNSERVABLE_PREFIX} is online"
        reasons = sorted({w.capabilities.why_not(req) or "" for w in online} - {""})
        return f"{UNSERVABLE_PREFIX} online can take it ({req.describe()}): every worker " + "; ".join(
            reasons
        )

    async def lift_quarantines(self) -> int:
        """Put workers whose quarantine time is over back to work."""
        now = self.clock()

        def tx_fn(tx: SqlTx) -> int:
            count = 0
            for w in tx.list_workers():
                if w.state == WorkerState.QUARANTINED and w.quarantined_until and w.quarantined_until < now:
                    tx.update_worker(
                        w.id, state=WorkerState.ACTIVE, quarantined_until=None, quarantine_reason=None
                    )
                    count += 1
            return count

        count = await self.store.write(tx_fn)
        if count:
            self.notifier.work_available()
        return count

    async def prune(self) -> int:
        """Drop events older than the retention period."""
        cutoff = self.clock() - self.settings.event_retention_seconds
        return await self.store.write(lambda tx: tx.prune_events(cutoff))

    async def reap(self) -> None:
        """One pass of every periodic duty. Safe to run on every replica at once."""
        await self.expire_leases()
        await self.check_unservable()
        await self.lift_quarantines()

    # ================================================================ webhooks
    def _queue_webhooks(
        self,
        tx: SqlTx,
        fx: Effects,
        jobs: Sequence[Job],
        event_type: str,
        now: float,
        *,
        only_explicit: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Put webhook messages for these jobs in the outbox (the job's URL, else its tenant's)."""
        rows: list[OutboxMessage] = []
        for job in jobs:
            url = job.webhook_url
            if url is None and not only_explicit:
                tenant = self._tenant(tx, job.tenant)
                url = tenant.webhook_url if tenant else None
            if not url:
                continue
            data = {
                "id": job.id,
                "state": job.state.value,
                "kind": job.kind.value,
                "labels": job.labels,
                "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
                "cost_usd": round(job.cost_usd, 8),
                **(extra or {}),
            }
            if job.kind == JobKind.TRAIN_LORA and job.state == JobState.SUCCEEDED:
                data["lora"] = job.result.get("lora")
            payload = json.dumps({"type": event_type, "timestamp": now, "data": data})
            rows.append(
                OutboxMessage(
                    message_id=new_id("msg_"),
                    job_id=job.id,
                    tenant=job.tenant,
                    url=url,
                    event_type=event_type,
                    payload=payload,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        if rows:
            tx.insert_outbox(rows)
            fx.webhooks = True
