"""The job state machine's writes: back to the queue, interrupted, finished — and a worker's
quarantine, which gives its failures back — plus the webhook outbox every transition feeds.

Each transition runs inside the caller's transaction and records what this process must do once
that transaction has committed in an :class:`Effects` value: wake-ups *and* metric counts, so a
transaction that rolls back has counted nothing (:func:`apply_effects` runs after the commit).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sdfleet.domain import AttemptOutcome, EventType, Job, JobKind, JobState, WorkerInfo, WorkerState, new_id
from sdfleet.errors import NotFound, StaleLease
from sdfleet.jobs import policy
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.policy import JobPolicy
from sdfleet.store import JobStore, OutboxMessage, SqlTx, Tenant

log = logging.getLogger("sdfleet.jobs")

T = TypeVar("T")
TENANT_CACHE_SECONDS = 5.0

CountedMetric = Literal[
    "submitted",
    "claimed",
    "completed",
    "failed_attempts",
    "failed_jobs",
    "canceled",
    "lease_expiries",
    "quarantines",
]
ObservedMetric = Literal["queue_wait", "job_latency"]


@dataclass(slots=True)
class Effects:
    """What a transaction asks of this process once it has committed: wake-ups (claimable jobs,
    queued webhooks, changed jobs) and metric updates (counter increments, histogram samples)."""

    work: int = 0  # jobs that became claimable
    all_work: bool = False  # wake every waiting claim (a worker came back to work)
    webhooks: bool = False
    jobs: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)  # parent jobs whose children changed: advance them
    counts: Counter[CountedMetric] = field(default_factory=Counter)
    samples: list[tuple[ObservedMetric, float]] = field(default_factory=list)

    def count(self, metric: CountedMetric, n: int = 1) -> None:
        """Add ``n`` to a counter once the transaction commits."""
        if n:
            self.counts[metric] += n

    def observe(self, metric: ObservedMetric, value: float) -> None:
        """Record a histogram sample once the transaction commits."""
        self.samples.append((metric, value))


def apply_effects(fx: Effects, notifier: Notifier, metrics: Metrics) -> None:
    """Apply a committed transaction's effects on this process."""
    counters = {
        "submitted": metrics.submitted,
        "claimed": metrics.claimed,
        "completed": metrics.completed,
        "failed_attempts": metrics.failed_attempts,
        "failed_jobs": metrics.failed_jobs,
        "canceled": metrics.canceled,
        "lease_expiries": metrics.lease_expiries,
        "quarantines": metrics.quarantines,
    }
    for name, n in fx.counts.items():
        counters[name].inc(n)
    histograms = {"queue_wait": metrics.queue_wait, "job_latency": metrics.job_latency}
    for metric, value in fx.samples:
        histograms[metric].observe(value)
    if fx.all_work:
        notifier.work_available()
    elif fx.work:
        notifier.work_available(fx.work)
    if fx.webhooks:
        notifier.webhooks_queued()
    if fx.jobs:
        notifier.job_changed(fx.jobs)


# ===================================================================== fencing reads


def load_worker(tx: SqlTx, worker_id: str, tenant: str | None) -> WorkerInfo:
    """The worker row (of ``tenant``; None: any), or :class:`NotFound`."""
    worker = tx.get_worker(worker_id)
    if worker is None or (tenant is not None and worker.tenant != tenant):
        raise NotFound(f"no worker {worker_id!r}: register first", field="worker_id")
    return worker


def held_job(tx: SqlTx, job_id: str, epoch: int, worker_id: str) -> Job:
    """The job (locked) that this worker holds at ``epoch``, or :class:`StaleLease`."""
    job = tx.get_job(job_id, lock=True)
    if job is None:
        raise NotFound(f"no job {job_id!r}", field="job_id")
    if job.lease_epoch != epoch or job.lease_worker != worker_id or job.state.terminal:
        raise StaleLease(f"lease epoch {epoch} of job {job_id} is not current", field="epoch")
    return job


def end_held_attempt(
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


class Transitions:
    """The state machine's writes, for one replica (it caches tenants' webhook URLs for a few
    seconds: every transition routes a webhook)."""

    def __init__(self, policy: JobPolicy):
        self.policy = policy
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a tenant from the cache (its row is about to change)."""
        self._tenants.pop(tenant_id, None)

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

    # ================================================================ job states
    def requeue(
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

    def interrupt(
        self, tx: SqlTx, fx: Effects, job: Job, now: float, reason: str, *, lease_expired: bool = False
    ) -> None:
        """The job lost its worker through no fault of its own (lease expired, released)."""
        decision = self.policy.after_interruption(
            interruptions=job.interruptions, cancel_requested=job.cancel_requested, reason=reason
        )
        if decision.action == "cancel":
            self.cancel(tx, fx, job, now)
        elif decision.action == "fail":
            tx.update_job(job.id, interruptions=decision.interruptions)
            self.finish(
                tx, fx, job, JobState.FAILED, now, code="too_many_interruptions", message=decision.message
            )
        else:
            self.requeue(
                tx,
                fx,
                job,
                now,
                stalled=True,
                reason=reason,
                interruptions=decision.interruptions,
                keep_holder=lease_expired,
            )

    def cancel(self, tx: SqlTx, fx: Effects, job: Job, now: float) -> None:
        """Finish a job as canceled by its client; one that no worker ever started gets its GPU-budget
        charge back."""
        if job.gpu_charge > 0 and job.started_at is None:
            tx.refund_gpu(job.tenant, job.gpu_charge)
        self.finish(tx, fx, job, JobState.CANCELED, now, code="canceled", message="canceled by the client")

    def finish(
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
        """A terminal state other than success (those are batched by the completion)."""
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
        self.queue_webhooks(tx, fx, [job], "job.finished", now)
        fx.jobs.add(job.id)
        if job.parent_id:
            fx.parents.add(job.parent_id)
        if state == JobState.FAILED:
            fx.count("failed_jobs")
        elif state == JobState.CANCELED:
            fx.count("canceled")

    # ================================================================ quarantine
    def maybe_quarantine(self, tx: SqlTx, fx: Effects, worker: WorkerInfo, now: float) -> None:
        """Quarantine a worker that failed too many distinct jobs lately; give those jobs their
        failures back, and take back the jobs it still holds."""
        if worker.state == WorkerState.QUARANTINED:
            return
        failed = [
            a
            for a in tx.failed_attempts_of_worker(worker.id, now - self.policy.quarantine_window)
            if not policy.is_user_error(a.error_code)
        ]
        counted = [policy.CountedFailure(a.job_id, a.error_code, a.refunded) for a in failed]
        verdict = self.policy.quarantine_verdict(counted, failed[-1].error_message if failed else None)
        if verdict is None:
            return
        tx.update_worker(
            worker.id,
            state=WorkerState.QUARANTINED,
            quarantined_until=now + self.policy.quarantine_seconds,
            quarantine_reason=verdict.reason,
        )
        tx.mark_attempts_refunded([a.id for a in failed])
        # give the failures back: each job gets its failure refunded; a job this worker failed for
        # good goes back to the queue. The per-job ban on this worker stays.
        for job in tx.get_jobs(sorted(verdict.jobs), lock=True):
            refund = sum(1 for a in failed if a.job_id == job.id)
            failures = max(0, job.failures - refund)
            if job.state == JobState.FAILED and job.lease_worker == worker.id:
                self.requeue(
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
            self.interrupt(tx, fx, job, now, f"worker {worker.name} was quarantined")
        fx.work += 1
        fx.count("quarantines")
        log.warning(
            "worker.quarantined worker_id=%s name=%s reason=%s", worker.id, worker.name, verdict.reason
        )

    # ================================================================ a reported failure
    def failed(
        self,
        tx: SqlTx,
        fx: Effects,
        worker: WorkerInfo,
        job: Job,
        epoch: int,
        now: float,
        *,
        code: str,
        message: str,
        retryable: bool,
        engine_seconds: float,
    ) -> None:
        """Apply the failure policy to a job whose attempt at ``epoch`` on ``worker`` just failed
        (the attempt is closed): retry elsewhere within the budget or fail it; blame the worker
        (toward quarantine) or absolve every worker it failed the same way on."""
        worker_id = worker.id
        attempts = tx.list_attempts(job.id)
        decision = self.policy.after_failure(
            worker_id=worker_id,
            code=code,
            message=message,
            retryable=retryable,
            failures=job.failures,
            history=[
                policy.PastFailure(a.worker_id, a.error_code, a.error_message)
                for a in attempts
                if a.outcome == AttemptOutcome.FAILED and a.epoch != epoch
            ],
        )
        if job.cancel_requested:
            self.cancel(tx, fx, job, now)
        elif decision.action == "requeue":
            self.requeue(
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
            self.finish(tx, fx, job, JobState.FAILED, now, code=decision.code, message=decision.message)
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
            self.maybe_quarantine(tx, fx, worker, now)

    # ================================================================ webhooks
    def queue_webhooks(
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


class Writer:
    """The one way the job room writes: run ``fn(tx, fx)`` as one store transaction, then apply
    the effects it gathered on this process — only if it committed."""

    def __init__(self, store: JobStore, notifier: Notifier, metrics: Metrics):
        self.store = store
        self.notifier = notifier
        self.metrics = metrics
        self.on_parents: Callable[[set[str]], None] | None = None
        """Called after a commit with the parent jobs whose children changed (the fan-out advances them)."""

    async def __call__(self, fn: Callable[[SqlTx, Effects], T], fx: Effects | None = None) -> T:
        effects = fx if fx is not None else Effects()
        result = await self.store.write(lambda tx: fn(tx, effects))
        apply_effects(effects, self.notifier, self.metrics)
        if effects.parents and self.on_parents is not None:
            self.on_parents(effects.parents)
        return result
