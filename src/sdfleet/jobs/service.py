"""The job lifecycle (DESIGN.md §3): submit, claim, heartbeat, complete, fail, release, cancel —
the use cases the routes call, composed from the room's collaborators:

- :mod:`~sdfleet.jobs.types` (requests and results), :mod:`~sdfleet.jobs.blobkeys` (blob keys);
- :mod:`~sdfleet.jobs.policy` (the pure decisions: retry budget, interruption cap, quarantine,
  unservable), :mod:`~sdfleet.jobs.transitions` (the state machine's writes and :class:`Effects`);
- :mod:`~sdfleet.jobs.presence` (worker liveness and warm sets), :mod:`~sdfleet.jobs.reaper`
  (the periodic duties), :mod:`~sdfleet.jobs.training` (checkpoints, LoRA registration),
  :mod:`~sdfleet.jobs.quotas` (limits and buckets).

Every use case is one store transaction: the state change, the attempt record, the events and
the webhook messages commit together. It runs through one writer (:class:`Writer`), which applies
the effects it gathered — wake-ups and metric counts — only after the commit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sdfleet.config import Settings
from sdfleet.domain import (
    AttemptOutcome,
    EventType,
    Job,
    JobKind,
    JobState,
    Output,
    WorkerInfo,
    WorkerState,
    new_id,
)
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.jobs import policy
from sdfleet.jobs.blobkeys import LORA_CONTENT_TYPE, OUTPUT_EXTENSIONS, checkpoint_key, output_key
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.policy import UNSERVABLE_PREFIX, JobPolicy
from sdfleet.jobs.presence import Presence
from sdfleet.jobs.quotas import (
    DEFAULT,
    Pricing,
    TenantLimits,
    charge_submit,
    check_override,
    effective_limits,
    quota_view,
)
from sdfleet.jobs.reaper import Reaper
from sdfleet.jobs.registry import named_models
from sdfleet.jobs.training import Checkpoints, register_lora
from sdfleet.jobs.transitions import Effects, Transitions, Writer, held_job, load_worker
from sdfleet.jobs.types import (
    Beat,
    BeatAnswer,
    CheckpointRecorded,
    ClaimResult,
    Clock,
    Completion,
    CompletionResult,
    EventRow,
    JobRequest,
    OutputReport,
    Registration,
    Submitted,
    requirements_of,
)
from sdfleet.jobs.webhooks import new_webhook_secret
from sdfleet.store import Buckets, CompletedJob, JobStore, LeaseAnswer, SqlTx, Tenant

log = logging.getLogger("sdfleet.jobs")

PRICING_SECONDS = 60.0  # how long a replica prices jobs from one read of the recorded engine times


class JobService:
    """The use cases of the job system. Stateless: every replica can serve every call.

    Each public method is ``async`` and runs its transaction as one plain function ``fn(tx, fx)``
    in the store's thread, through ``self._write``; the effects gathered in ``fx`` (waking long
    polls and event streams, metric counts) are applied after the commit, never on a rollback.
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
        self.policy = JobPolicy.from_settings(settings)
        self.transitions = Transitions(self.policy)
        self.presence = Presence(settings)
        self._write = Writer(store, self.notifier, self.metrics)
        self.reaper = Reaper(settings, self.transitions, self._write, clock)
        self.checkpoints = Checkpoints(self.transitions, self._write, clock)
        self._prices: tuple[float, Pricing] | None = None  # (refresh after, GPU-second prices)

    # ================================================================ tenants
    async def ensure_tenant(self, tenant_id: str) -> Tenant:
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

    async def set_tenant_webhook(self, tenant_id: str, url: str | None) -> Tenant:
        await self.ensure_tenant(tenant_id)

        def update(tx: SqlTx, fx: Effects) -> Tenant:
            tx.update_tenant(tenant_id, webhook_url=url)
            tenant = tx.get_tenant(tenant_id)
            assert tenant is not None
            return tenant

        self.transitions.forget_tenant(tenant_id)
        return await self._write(update)

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

        def tx_fn(tx: SqlTx, fx: Effects) -> list[Submitted]:
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
                charge_submit(tx, tenant, limits, len(new_jobs), charge, now)
            uses = {j.id: [n for n in named_models(j.spec) if n != j.requirements.model] for j in new_jobs}
            tx.insert_jobs(new_jobs, {k: v for k, v in uses.items() if v})
            tx.insert_events([(j.id, tenant, EventType.QUEUED, {"state": "queued"}, now) for j in new_jobs])
            self.transitions.queue_webhooks(tx, fx, new_jobs, "job.queued", now, only_explicit=True)
            fx.work = len(new_jobs)
            fx.count("submitted", len(new_jobs))
            return out

        return await self._write(tx_fn)

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

        def tx_fn(tx: SqlTx, fx: Effects) -> Job:
            job = tx.get_job(job_id, lock=True)
            if job is None or (tenant is not None and job.tenant != tenant):
                raise NotFound(f"no job {job_id!r}", field="job_id")
            if job.state.terminal:
                return job
            if job.state == JobState.QUEUED:
                self.transitions.cancel(tx, fx, job, now)
            else:
                tx.update_job(job.id, cancel_requested=True, updated_at=now)
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        return await self._write(tx_fn, Effects(jobs={job_id}))

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
        await self._write(lambda tx, fx: tx.insert_worker(worker))
        log.info("worker.registered worker_id=%s name=%s engine=%s", worker.id, worker.name, worker.engine)
        return worker

    async def stop_worker(self, worker_id: str, tenant: str | None) -> None:
        def tx_fn(tx: SqlTx, fx: Effects) -> None:
            load_worker(tx, worker_id, tenant)
            tx.update_worker(worker_id, state=WorkerState.STOPPED, current_jobs=[])

        await self._write(tx_fn)

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

        def tx_fn(tx: SqlTx, fx: Effects) -> tuple[list[Job], WorkerState]:
            self.reaper.expire_leases_tx(tx, fx, now)
            worker = load_worker(tx, worker_id, tenant)
            self.presence.touch(tx, worker_id, now, loaded_models, cached_models=cached_models)
            if worker.state != WorkerState.ACTIVE:  # quarantined, or said it stopped
                return [], worker.state
            claimed = tx.claim_jobs(
                worker_id=worker_id,
                caps=worker.capabilities,
                limit=max_jobs,
                now=now,
                lease_until=now + lease,
                affinity=self.presence.affinity(tx, worker, now, loaded_models, cached_models),
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
                self.transitions.queue_webhooks(tx, fx, claimed, "job.started", now)
                fx.jobs.update(j.id for j in claimed)
                fx.count("claimed", len(claimed))
                for j in claimed:
                    fx.observe("queue_wait", max(0.0, now - j.created_at))
            return claimed, worker.state

        claimed, state = await self._write(tx_fn)
        return ClaimResult(claimed, lease, state)

    async def reject_claimed(self, worker_id: str, rejected: Sequence[tuple[str, int, str]]) -> None:
        """Fail claimed ``(job id, epoch, reason)`` jobs whose claim reply could not be built (data
        stored before it was validated, a reference that no longer resolves): each fails alone as
        ``invalid_input`` — the job's fault, counted against no worker — and its lease is let go,
        so the rest of the claim goes out and the queue moves on."""
        if not rejected:
            return
        now = self.clock()

        def tx_fn(tx: SqlTx, fx: Effects) -> None:
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
                self.transitions.finish(
                    tx, fx, job, JobState.FAILED, now, code=policy.INVALID_INPUT, message=message
                )
                log.warning(
                    "job.claim_reply_failed job_id=%s worker_id=%s reason=%s", job.id, worker_id, reason
                )

        await self._write(tx_fn)

    async def held_jobs(
        self, worker_id: str, tenant: str | None, pairs: Sequence[tuple[str, int]]
    ) -> dict[str, Job]:
        """The jobs of ``(job id, epoch)`` pairs that this worker (of ``tenant``) holds at that epoch
        now (a read): what a worker may write blobs for before its report is recorded. The report's
        own transaction checks again; a job not held now never becomes held at that epoch again."""

        def read(tx: SqlTx) -> dict[str, Job]:
            load_worker(tx, worker_id, tenant)
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
        if not beats and not self.presence.is_stale(
            worker_id, now, loaded_models, cached_models=cached_models
        ):
            # an idle worker's beat: nothing to write, only its state to tell (a read)
            idle = await self.store.read(lambda tx: load_worker(tx, worker_id, tenant))
            return [], idle.state

        def tx_fn(tx: SqlTx, fx: Effects) -> tuple[dict[tuple[str, int], LeaseAnswer], WorkerState]:
            worker = load_worker(tx, worker_id, tenant)
            answers = tx.extend_leases(
                worker_id,
                [(b.job_id, b.epoch, b.step, b.total) for b in beats],
                now,
                now + self.settings.lease_seconds,
            )
            self.presence.touch(
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

        raw, state = await self._write(tx_fn, Effects(jobs={b.job_id for b in beats}))
        answers = []
        for b in beats:
            a = raw[(b.job_id, b.epoch)]
            answers.append(
                BeatAnswer(
                    b.job_id, b.epoch, "lost" if not a.held else ("cancel" if a.cancel else "continue")
                )
            )
        return answers, state

    # ================================================================ complete
    async def complete(
        self, worker_id: str, tenant: str | None, completions: Sequence[Completion]
    ) -> list[CompletionResult]:
        """Record finished jobs, exactly once each. A stale epoch changes nothing."""
        now = self.clock()

        def tx_fn(tx: SqlTx, fx: Effects) -> list[CompletionResult]:
            worker = load_worker(tx, worker_id, tenant)
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
                    finished[-1].result.update(register_lora(tx, job, c, now))
                    job.result = finished[-1].result
                done_jobs.append(job)
                fx.jobs.add(job.id)
                results.append(CompletionResult(job.id, "accepted"))
                fx.count("completed")
                fx.observe("job_latency", max(0.0, now - job.created_at))
            if finished:
                # the rows are locked (or the database is, on SQLite) and were checked above:
                # one statement of each kind for the whole batch
                tx.complete_jobs(finished, worker_id, now)
                tx.insert_outputs_of(outputs)
                tx.insert_events(events)
                self.transitions.queue_webhooks(tx, fx, done_jobs, "job.finished", now)
                tx.add_worker_counters(
                    worker_id, done=len(finished), engine_seconds=sum(f.engine_seconds for f in finished)
                )
            return results

        return await self._write(tx_fn)

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

        def tx_fn(tx: SqlTx, fx: Effects) -> Job:
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
            decision = self.policy.after_failure(
                worker_id=worker_id,
                code=code[:64],
                message=message[:2000],
                retryable=retryable,
                failures=job.failures,
                history=[
                    policy.PastFailure(a.worker_id, a.error_code, a.error_message)
                    for a in attempts
                    if a.outcome == AttemptOutcome.FAILED and a.epoch != epoch
                ],
            )
            if job.cancel_requested:
                self.transitions.cancel(tx, fx, job, now)
            elif decision.action == "requeue":
                self.transitions.requeue(
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
                self.transitions.finish(
                    tx, fx, job, JobState.FAILED, now, code=decision.code, message=decision.message
                )
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
            fx.count("failed_attempts")
            if decision.blames_worker:
                self.transitions.maybe_quarantine(tx, fx, worker, now)
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        return await self._write(tx_fn, Effects(jobs={job_id}))

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

        def tx_fn(tx: SqlTx, fx: Effects) -> Job:
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
            self.transitions.interrupt(tx, fx, job, now, f"released by {worker.name}: {reason}")
            fresh = tx.get_job(job_id)
            assert fresh is not None
            return fresh

        return await self._write(tx_fn, Effects(jobs={job_id}))

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
        worker = load_worker(tx, worker_id, tenant)
        job = held_job(tx, job_id, epoch, worker_id)
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

    async def release_quarantine(self, worker_id: str) -> None:
        """Put a quarantined worker back to work now (an operator's call)."""

        def tx_fn(tx: SqlTx, fx: Effects) -> None:
            load_worker(tx, worker_id, None)
            tx.update_worker(
                worker_id, state=WorkerState.ACTIVE, quarantined_until=None, quarantine_reason=None
            )

        await self._write(tx_fn, Effects(all_work=True))

    # ================================================================ training (jobs.training)
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
        """A worker stored a training checkpoint (see :meth:`Checkpoints.record`)."""
        return await self.checkpoints.record(
            worker_id, tenant, job_id, epoch, step=step, key=key, size=size, sha256=sha256
        )

    # ================================================================ reaper (jobs.reaper)
    async def expire_leases(self) -> int:
        """Re-queue (ahead of new work) every running job whose lease ran out."""
        return await self.reaper.expire_leases()

    async def check_unservable(self) -> int:
        """Say why queued jobs wait when nobody can serve them; expire those that waited too long."""
        return await self.reaper.check_unservable()

    async def lift_quarantines(self) -> int:
        """Put workers whose quarantine time is over back to work."""
        return await self.reaper.lift_quarantines()

    async def prune(self) -> int:
        """Drop events older than the retention period."""
        return await self.reaper.prune()

    async def reap(self) -> None:
        """One pass of every periodic duty. Safe to run on every replica at once."""
        await self.reaper.reap()


__all__ = [
    "LORA_CONTENT_TYPE",
    "OUTPUT_EXTENSIONS",
    "UNSERVABLE_PREFIX",
    "Beat",
    "BeatAnswer",
    "CheckpointRecorded",
    "ClaimResult",
    "Completion",
    "CompletionResult",
    "Effects",
    "JobRequest",
    "JobService",
    "OutputReport",
    "Registration",
    "Submitted",
    "checkpoint_key",
    "output_key",
    "requirements_of",
]
