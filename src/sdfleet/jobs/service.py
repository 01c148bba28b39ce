"""The job lifecycle (DESIGN.md §3): submit, claim, heartbeat, complete, fail, release, cancel —
the use cases the routes call, composed from the room's collaborators:

- :mod:`~sdfleet.jobs.types` (requests and results), :mod:`~sdfleet.jobs.blobkeys` (blob keys);
- :mod:`~sdfleet.jobs.policy` (the pure decisions: retry budget, interruption cap, quarantine,
  unservable), :mod:`~sdfleet.jobs.transitions` (the state machine's writes and :class:`Effects`);
- :mod:`~sdfleet.jobs.presence` (worker liveness and warm sets), :mod:`~sdfleet.jobs.reaper`
  (the periodic duties), :mod:`~sdfleet.jobs.completion` (the one completion tail),
  :mod:`~sdfleet.jobs.training` (checkpoints, LoRA registration), :mod:`~sdfleet.jobs.tenants`
  (tenants, limits, prices),
  :mod:`~sdfleet.jobs.quotas` (limits and buckets).

Every use case is one store transaction: the state change, the attempt record, the events and
the webhook messages commit together. It runs through one writer (:class:`Writer`), which applies
the effects it gathered — wake-ups and metric counts — only after the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sdfleet.blobs import BlobStore
from sdfleet.config import Settings
from sdfleet.domain import (
    PARENT_KINDS,
    AttemptOutcome,
    EventType,
    Job,
    JobKind,
    JobState,
    WorkerInfo,
    WorkerState,
    new_id,
)
from sdfleet.errors import NotFound, ValidationError
from sdfleet.jobs import policy
from sdfleet.jobs.annotate import PreprocessPlan, waiting_reason
from sdfleet.jobs.completion import record_completions
from sdfleet.jobs.fanout import FanOut, Plan, child_jobs, insert_children
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.policy import JobPolicy
from sdfleet.jobs.presence import Presence
from sdfleet.jobs.quotas import (
    TenantLimits,
    charge_submit,
)
from sdfleet.jobs.reaper import Reaper
from sdfleet.jobs.registry import named_models
from sdfleet.jobs.sd_upscale import SdUpscalePlan
from sdfleet.jobs.tenants import Tenants
from sdfleet.jobs.training import Checkpoints
from sdfleet.jobs.transitions import Effects, Transitions, Writer, end_held_attempt, load_worker
from sdfleet.jobs.types import (
    Beat,
    BeatAnswer,
    CheckpointRecorded,
    ClaimResult,
    Clock,
    Completion,
    CompletionResult,
    JobRequest,
    Registration,
    Submitted,
    requirements_of,
)
from sdfleet.jobs.upscale_batch import UpscaleBatchPlan
from sdfleet.store import JobStore, LeaseAnswer, SqlTx, Tenant

log = logging.getLogger("sdfleet.jobs")


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
        blobs: BlobStore | None = None,
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
        self.tenants = Tenants(settings, self.transitions, self._write, clock)
        self.fanout: FanOut | None = None
        if blobs is not None:  # parents read their children's outputs and store their own
            plans: dict[JobKind, Plan] = {
                JobKind.SD_UPSCALE: SdUpscalePlan(),
                JobKind.UPSCALE_BATCH: UpscaleBatchPlan(),
                # a generation whose ControlNet units need preprocessing waits for its annotate jobs
                JobKind.TXT2IMG: PreprocessPlan(),
                JobKind.IMG2IMG: PreprocessPlan(),
            }
            self.fanout = FanOut(store, blobs, self._write, self.transitions, plans, clock)
            self._write.on_parents = self.fanout.soon

    # ================================================================ tenants and quotas (jobs.tenants)
    async def ensure_tenant(self, tenant_id: str) -> Tenant:
        """The tenant row, created (with a new webhook secret) on first use."""
        return await self.tenants.ensure(tenant_id)

    async def set_tenant_webhook(self, tenant_id: str, url: str | None) -> Tenant:
        """Set (None: clear) the tenant's default webhook URL."""
        return await self.tenants.set_webhook(tenant_id, url)

    async def estimate_gpu_seconds(self, kind: JobKind, spec: dict[str, Any], model: str | None) -> float:
        """A job's estimated GPU seconds (what the daily budget and the largest-job limit charge)."""
        return await self.tenants.estimate_gpu_seconds(kind, spec, model)

    async def quota_status(self, tenant_id: str) -> dict[str, Any]:
        """A tenant's limits and what is left of each (``None``: unlimited)."""
        return await self.tenants.quota_status(tenant_id)

    async def list_tenants(self) -> list[tuple[Tenant, TenantLimits]]:
        """Every tenant with its effective limits."""
        return await self.tenants.list_all()

    async def set_tenant_limits(self, tenant_id: str, changes: dict[str, Any]) -> TenantLimits:
        """Change a tenant's limits (see :meth:`Tenants.set_limits`)."""
        return await self.tenants.set_limits(tenant_id, changes)

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
        if self.fanout is None and any(r.kind in PARENT_KINDS for r in requests):
            raise ValidationError(
                "this orchestrator runs no parent jobs (it has no blob store)", field="kind"
            )
        if self.fanout is None and any(r.first_stage for r in requests):
            raise ValidationError(
                "ControlNet preprocessing runs as annotate jobs, and this orchestrator has no blob store for "
                "them: send the control map itself, with module 'none'",
                field="params.controlnet",
            )
        row = await self.tenants.ensure(tenant)
        limits = self.tenants.limits_of(row) if self.settings.quotas.enabled else None
        gpu_costs = await self.tenants.gpu_costs(limits, requests)
        now = self.clock()

        def tx_fn(tx: SqlTx, fx: Effects) -> list[Submitted]:
            existing = tx.jobs_by_idempotency_key(tenant, keys)
            out: list[Submitted] = []
            new_jobs: list[Job] = []
            planned: dict[str, JobRequest] = {}  # jobs whose request brought its first stage of children
            charge = 0.0
            for i, req in enumerate(requests):
                if req.idempotency_key and req.idempotency_key in existing:
                    out.append(Submitted(existing[req.idempotency_key], created=False))
                    continue
                cost = (
                    gpu_costs[i] if gpu_costs and limits and limits.gpu_seconds_per_day is not None else 0.0
                )
                charge += cost
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
                    gpu_charge=cost,
                )
                new_jobs.append(job)
                if req.first_stage:
                    planned[job.id] = req
                out.append(Submitted(job, created=True))
            if new_jobs and limits is not None:
                charge_submit(tx, tenant, limits, len(new_jobs), charge, now)
            parents = [j for j in new_jobs if j.kind in PARENT_KINDS or j.id in planned]
            stages: dict[str, list[Job]] = {}
            for parent in parents:  # stored waiting; their first stage's children are queued with them
                parent.state = JobState.WAITING
                assert self.fanout is not None
                plan = self.fanout.plans[parent.kind]
                first = planned[parent.id].first_stage if parent.id in planned else plan.first(parent)
                stages[parent.id] = child_jobs(parent, first, 0, now)
                parent.progress_total = max(plan.expected(parent), len(stages[parent.id]))
                if parent.id in planned:
                    parent.wait_reason = waiting_reason(stages[parent.id])
            uses = {j.id: [n for n in named_models(j.spec) if n != j.requirements.model] for j in new_jobs}
            tx.insert_jobs(new_jobs, {k: v for k, v in uses.items() if v})
            tx.insert_events([(j.id, tenant, EventType.QUEUED, {"state": "queued"}, now) for j in new_jobs])
            for parent in parents:
                insert_children(tx, fx, stages[parent.id], now)
                if parent.wait_reason:  # (a row is inserted without one)
                    tx.update_job(parent.id, wait_reason=parent.wait_reason)
            self.transitions.queue_webhooks(tx, fx, new_jobs, "job.queued", now, only_explicit=True)
            fx.work = len(new_jobs)
            fx.count("submitted", len(new_jobs))
            return out

        return await self._write(tx_fn)

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
            elif job.state == JobState.WAITING and self.fanout is not None:  # a parent: its children too
                self.fanout.cancel_children(tx, fx, job, now)
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
            return record_completions(tx, fx, self.transitions, worker, completions, now)

        return await self._write(tx_fn)

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
            worker, job = end_held_attempt(
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
            self.transitions.failed(
                tx,
                fx,
                worker,
                job,
                epoch,
                now,
                code=code[:64],
                message=message[:2000],
                retryable=retryable,
                engine_seconds=engine_seconds,
            )
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
            worker, job = end_held_attempt(
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
        if self.fanout is not None:
            await self.fanout.advance_waiting()


__all__ = ["JobService"]
