"""The periodic duties of the job system (safe to run on every replica at once): re-queue jobs
whose lease ran out, say why queued jobs wait when nobody can serve them and expire those that
waited too long, lift quarantines whose time is over, prune old events.
"""

from __future__ import annotations

import logging

from sdfleet.config import Settings
from sdfleet.domain import AttemptOutcome, JobKind, JobState, Requirements, WorkerInfo, WorkerState
from sdfleet.jobs import policy
from sdfleet.jobs.transitions import Effects, Transitions, Writer
from sdfleet.jobs.types import Clock
from sdfleet.store import SqlTx

log = logging.getLogger("sdfleet.jobs")


class Reaper:
    """The reaper's passes; :meth:`expire_leases_tx` also runs inside every claim."""

    def __init__(self, settings: Settings, transitions: Transitions, write: Writer, clock: Clock):
        self.settings = settings
        self.policy = transitions.policy
        self.transitions = transitions
        self._write = write
        self.clock = clock

    def expire_leases_tx(self, tx: SqlTx, fx: Effects, now: float) -> int:
        """In the caller's transaction: interrupt every running job whose lease ran out."""
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
            self.transitions.interrupt(
                tx, fx, job, now, "the worker stopped sending heartbeats (lease expired)", lease_expired=True
            )
        if expired:
            fx.count("lease_expiries", len(expired))
            log.info("jobs.leases_expired count=%d", len(expired))
        return len(expired)

    async def expire_leases(self) -> int:
        """Re-queue (ahead of new work) every running job whose lease ran out."""
        now = self.clock()
        return await self._write(lambda tx, fx: self.expire_leases_tx(tx, fx, now))

    async def check_unservable(self) -> int:
        """Say why queued jobs wait when no online worker can take them; expire those that waited
        longer than ``unservable_after``. Returns how many expired."""
        now = self.clock()

        def read(tx: SqlTx) -> tuple[list[WorkerInfo], list[tuple[str, Requirements, float, str | None]]]:
            workers = tx.list_workers(seen_since=now - self.settings.worker_offline_after)
            return [w for w in workers if w.state == WorkerState.ACTIVE], tx.queued_requirements()

        online, queued = await self._write.store.read(read)
        verdicts: dict[Requirements, str | None] = {}
        to_expire: list[tuple[str, str]] = []
        changes: dict[str | None, list[str]] = {}
        for job_id, req, queued_at, current in queued:
            if req not in verdicts:
                verdicts[req] = policy.why_unservable(req, online)
            why = verdicts[req]
            if why is not None and self.policy.expires(now - queued_at):
                to_expire.append((job_id, why))
            elif why is not None and why != current:
                changes.setdefault(why, []).append(job_id)
            elif why is None and current is not None and current.startswith(policy.UNSERVABLE_PREFIX):
                changes.setdefault(None, []).append(job_id)
        if not changes and not to_expire:
            return 0

        def write(tx: SqlTx, fx: Effects) -> int:
            for why, ids in changes.items():
                tx.set_wait_reason(ids, why)
            expired = 0
            for job in tx.get_jobs([job_id for job_id, _ in to_expire], lock=True):
                if job.state == JobState.QUEUED:
                    why = dict(to_expire)[job.id]
                    waited = now - (job.queued_at or job.created_at)
                    self.transitions.finish(
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

        return await self._write(write)

    async def lift_quarantines(self) -> int:
        """Put workers whose quarantine time is over back to work."""
        now = self.clock()

        def tx_fn(tx: SqlTx, fx: Effects) -> int:
            count = 0
            for w in tx.list_workers():
                if w.state == WorkerState.QUARANTINED and w.quarantined_until and w.quarantined_until < now:
                    tx.update_worker(
                        w.id, state=WorkerState.ACTIVE, quarantined_until=None, quarantine_reason=None
                    )
                    count += 1
            fx.all_work = count > 0
            return count

        return await self._write(tx_fn)

    async def prune(self) -> int:
        """Drop events older than the retention period."""
        cutoff = self.clock() - self.settings.event_retention_seconds
        return await self._write(lambda tx, fx: tx.prune_events(cutoff))

    async def reap(self) -> None:
        """One pass of every periodic duty."""
        await self.expire_leases()
        await self.check_unservable()
        await self.lift_quarantines()
