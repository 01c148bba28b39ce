"""Transaction statements on jobs and attempts: insert, read and guarded update; the claim, lease
extension and batched completion (a mixin of :class:`sdfleet.store.tx.SqlTx`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, literal, or_, select, update
from sqlalchemy.engine import Connection

from sdfleet.domain import Attempt, AttemptOutcome, Capabilities, Job, JobKind, JobState
from sdfleet.store.claim import FEATURE_MASK, claim_statement, served_statement
from sdfleet.store.dialect import Dialect
from sdfleet.store.records import Affinity, CompletedJob, LeaseAnswer
from sdfleet.store.rows import JOB_JSON_COLUMNS, attempt_from_row, dumps, encode, job_from_row, job_row
from sdfleet.store.schema import attempts, job_models, jobs

_COMPLETE_JOB = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("k_id"),
        jobs.c.lease_epoch == bindparam("k_epoch"),
        or_(jobs.c.state == JobState.RUNNING.value, jobs.c.state == JobState.QUEUED.value),
    )
    .values(
        state=JobState.SUCCEEDED.value,
        finished_at=bindparam("k_now"),
        updated_at=bindparam("k_now"),
        lease_expires_at=None,
        stalled=False,
        progress_step=bindparam("k_step"),
        engine_seconds=bindparam("k_engine_total"),
        cost_usd=bindparam("k_cost_total"),
        wait_reason=None,
        result=bindparam("k_result"),
        error_code=None,
        error_message=None,
    )
)
_COMPLETE_ATTEMPT = (
    update(attempts)
    .where(attempts.c.job_id == bindparam("k_id"), attempts.c.epoch == bindparam("k_epoch"))
    .values(
        outcome=AttemptOutcome.SUCCEEDED.value,
        ended_at=bindparam("k_now"),
        engine_seconds=bindparam("k_engine"),
        cost_usd=bindparam("k_cost"),
        timings=bindparam("k_timings"),
    )
)


_COMPLETE_JOB_KEYS = ("k_id", "k_epoch", "k_now", "k_step", "k_engine_total", "k_cost_total", "k_result")
_COMPLETE_ATTEMPT_KEYS = ("k_id", "k_epoch", "k_now", "k_engine", "k_cost", "k_timings")


class JobStatements:
    """Jobs and their attempts. Runs on the transaction's connection."""

    conn: Connection
    dialect: Dialect

    # ---------------------------------------------------------------- jobs
    def insert_jobs(self, new_jobs: Sequence[Job], uses: Mapping[str, Sequence[str]] | None = None) -> None:
        """Insert new jobs; ``uses`` maps a job id to the models it uses besides its checkpoint."""
        if new_jobs:
            self.conn.execute(insert(jobs), [job_row(j) for j in new_jobs])
        rows = [{"job_id": j, "name": n} for j, names in (uses or {}).items() for n in dict.fromkeys(names)]
        if rows:
            self.conn.execute(insert(job_models), rows)

    def jobs_by_idempotency_key(self, tenant: str, keys: Sequence[str]) -> dict[str, Job]:
        if not keys:
            return {}
        rows = self.conn.execute(
            select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key.in_(list(keys)))
        )
        return {r._mapping["idempotency_key"]: job_from_row(r) for r in rows}

    def get_job(self, job_id: str, *, lock: bool = False) -> Job | None:
        """One job; ``lock`` holds its row until the transaction ends (a no-op on SQLite, whose
        write transactions are serialized anyway)."""
        row = self.conn.execute(self.dialect.locked(select(jobs).where(jobs.c.id == job_id), lock)).first()
        return job_from_row(row) if row else None

    def get_jobs(self, job_ids: Sequence[str], *, lock: bool = False) -> list[Job]:
        if not job_ids:
            return []
        query = select(jobs).where(jobs.c.id.in_(sorted(job_ids))).order_by(jobs.c.id)
        return [job_from_row(r) for r in self.conn.execute(self.dialect.locked(query, lock))]

    def list_jobs(
        self,
        *,
        tenant: str | None,
        states: Sequence[JobState] = (),
        kind: JobKind | None = None,
        label: tuple[str, str] | None = None,
        before: str | None = None,
        limit: int = 50,
        parent: str | bool | None = False,
    ) -> list[Job]:
        """A page of jobs, newest first: ``parent`` an id lists its children, None the jobs without a
        parent, False every job."""
        q = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if isinstance(parent, str):
            q = q.where(jobs.c.parent_id == parent)
        elif parent is None:
            q = q.where(jobs.c.parent_id.is_(None))
        if tenant is not None:
            q = q.where(jobs.c.tenant == tenant)
        if states:
            q = q.where(jobs.c.state.in_([s.value for s in states]))
        if kind is not None:
            q = q.where(jobs.c.kind == kind.value)
        if before:
            q = q.where(jobs.c.id < before)
        if label is not None:  # in SQL, before the LIMIT, so pages are full
            q = q.where(self.dialect.json_text(jobs.c.labels, label[0]) == label[1])
        return [job_from_row(r) for r in self.conn.execute(q)]

    def children_of(self, parent_id: str, *, lock: bool = False) -> list[Job]:
        """A parent job's children, oldest first."""
        query = select(jobs).where(jobs.c.parent_id == parent_id).order_by(jobs.c.id)
        return [job_from_row(r) for r in self.conn.execute(self.dialect.locked(query, lock))]

    def waiting_parents(self, limit: int = 200) -> list[Job]:
        """Parent jobs waiting for children (the reaper advances those whose children are all done)."""
        query = select(jobs).where(jobs.c.state == JobState.WAITING.value).order_by(jobs.c.id).limit(limit)
        return [job_from_row(r) for r in self.conn.execute(query)]

    def has_jumped(self, job_id: str) -> bool:
        """Whether the job was put at the head of the queue (stalled) before."""
        return bool(self.conn.execute(select(jobs.c.jumped).where(jobs.c.id == job_id)).scalar())

    def update_job(
        self,
        job_id: str,
        *,
        expect_epoch: int | None = None,
        expect_states: Sequence[JobState] = (),
        **values: Any,
    ) -> bool:
        """Guarded update: applies only when the epoch and state still are what the caller saw."""
        q = update(jobs).where(jobs.c.id == job_id)
        if expect_epoch is not None:
            q = q.where(jobs.c.lease_epoch == expect_epoch)
        if expect_states:
            q = q.where(jobs.c.state.in_([s.value for s in expect_states]))
        res = self.conn.execute(q.values(**encode(values, JOB_JSON_COLUMNS)))
        return bool(res.rowcount)

    # ---------------------------------------------------------------- claim, leases and completion
    def claim_jobs(
        self,
        *,
        worker_id: str,
        caps: Capabilities,
        limit: int,
        now: float,
        lease_until: float,
        affinity: Affinity | None = None,
        default_weight: float = 1.0,
        share_memory: float = 10.0,
    ) -> list[Job]:
        """Atomically hand up to ``limit`` queued jobs this worker may take to it.

        Tenants take turns (weighted fair share, :func:`claim_statement`; ``default_weight`` for
        tenants without their own, ``share_memory`` the decay time of what they were handed). Within a tenant: stalled (re-queued after a lost lease) first,
        then priority, then age. With
        ``affinity`` (and some warm model reported), between priority and age: jobs past the aging
        bound, then how warm the job's models are on this worker; a job warmer on another live
        worker is left for it until it ages (:func:`claim_statement`). Jobs on which this
        worker already failed are skipped. Every hand-out bumps the lease epoch.
        """
        params = {
            "c_worker": worker_id,
            "c_kinds": list(caps.kinds),
            "c_archs": list(caps.archs) or [""],
            "c_max_pixels": caps.max_pixels,
            "c_not_features": ~int(caps.features) & FEATURE_MASK,
            "c_limit": limit,
            "c_window": limit,
            "c_now": now,
            "c_lease_until": lease_until,
            "c_weight": default_weight,
            "c_memory": share_memory,
        }
        warm = affinity is not None and not affinity.empty
        if affinity is not None and warm:
            params.update(
                c_loaded=list(affinity.loaded),
                c_cached=list(affinity.cached),
                c_loaded_else=list(affinity.loaded_elsewhere),
                c_cached_else=list(affinity.cached_elsewhere),
                c_aged_before=affinity.aged_before,
                c_window=max(affinity.window, limit),
            )
        stmt = claim_statement(skip_locked=not self.dialect.is_sqlite, affinity=warm)
        claimed = [job_from_row(r) for r in self.conn.execute(stmt, params)]
        claimed.sort(key=lambda j: (not j.stalled, -j.priority, j.id))
        if claimed:
            served: dict[str, int] = {}
            for j in claimed:
                served[j.tenant] = served.get(j.tenant, 0) + 1
            self._mark_served(dict(sorted(served.items())), now, share_memory)
        return claimed

    def _mark_served(self, served: Mapping[str, int], now: float, memory: float) -> None:
        """Record what a claim handed each tenant (the fair-share state: decayed use, last time). On
        PostgreSQL a row another claimer is writing is skipped, not waited for — claims never queue
        behind each other on a tenant's row; under such contention the count runs a little low."""
        self.conn.execute(
            served_statement(postgres=not self.dialect.is_sqlite),
            [{"s_tenant": t, "s_jobs": n, "s_now": now, "c_memory": memory} for t, n in served.items()],
        )

    def jobs_with_expired_lease(self, now: float, limit: int = 500) -> list[Job]:
        query = (
            select(jobs)
            .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now)
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        return [job_from_row(r) for r in self.conn.execute(self.dialect.lock_for_claim(query))]

    def any_expired_lease(self, now: float) -> bool:
        row = (
            self.conn.execute(
                select(literal(1))
                .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now)
                .limit(1)
            )
        ).first()
        return row is not None

    def extend_leases(
        self, worker_id: str, beats: Sequence[tuple[str, int, int, int]], now: float, lease_until: float
    ) -> dict[tuple[str, int], LeaseAnswer]:
        """Extend the leases this worker holds and record progress. ``beats`` are (job_id, epoch,
        step, total). A job whose lease ran out but that nobody took since (same epoch) is taken
        back. Returns an answer for every (job_id, epoch) in ``beats``."""
        if not beats:
            return {}
        ids = [b[0] for b in beats]
        query = (
            select(
                jobs.c.id,
                jobs.c.lease_epoch,
                jobs.c.state,
                jobs.c.lease_worker,
                jobs.c.cancel_requested,
                jobs.c.progress_step,
                jobs.c.tenant,
            )
            .where(jobs.c.id.in_(sorted(ids)))
            .order_by(jobs.c.id)
        )
        rows = self.conn.execute(self.dialect.locked(query, True)).all()
        current = {r[0]: r for r in rows}
        answers: dict[tuple[str, int], LeaseAnswer] = {}
        updates: list[dict[str, Any]] = []
        for job_id, epoch, step, total in beats:
            r = current.get(job_id)
            if r is None:
                answers[(job_id, epoch)] = LeaseAnswer(held=False, cancel=False, previous_step=0, tenant="")
                continue
            held = (
                r[1] == epoch
                and r[3] == worker_id
                and r[2] in (JobState.RUNNING.value, JobState.QUEUED.value)
            )
            answers[(job_id, epoch)] = LeaseAnswer(
                held=held, cancel=bool(r[4]), previous_step=r[5], tenant=r[6]
            )
            if held:
                updates.append({"b_id": job_id, "b_epoch": epoch, "b_step": step, "b_total": total})
        if updates:
            self.conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == bindparam("b_id"),
                    jobs.c.lease_epoch == bindparam("b_epoch"),
                    # not IN (…): expanding parameters cannot be used with executemany
                    or_(jobs.c.state == JobState.RUNNING.value, jobs.c.state == JobState.QUEUED.value),
                )
                .values(
                    state=JobState.RUNNING.value,
                    lease_expires_at=lease_until,
                    updated_at=now,
                    progress_step=bindparam("b_step"),
                    progress_total=bindparam("b_total"),
                ),
                updates,
            )
            self.conn.execute(
                update(attempts)
                .where(attempts.c.job_id == bindparam("b_id"), attempts.c.epoch == bindparam("b_epoch"))
                .values(last_heartbeat_at=now, outcome=AttemptOutcome.RUNNING.value, ended_at=None),
                [{"b_id": u["b_id"], "b_epoch": u["b_epoch"]} for u in updates],
            )
        return answers

    def complete_jobs(self, done: Sequence[CompletedJob], worker_id: str, now: float) -> None:
        """Mark checked completions succeeded and end their attempts (two batched statements)."""
        rows = [
            {
                "k_id": d.job.id,
                "k_epoch": d.epoch,
                "k_now": now,
                "k_step": d.job.progress_total or d.job.progress_step,
                "k_engine_total": d.job.engine_seconds,
                "k_cost_total": d.job.cost_usd,
                "k_result": dumps(d.result),
                "k_engine": d.engine_seconds,
                "k_cost": d.cost,
                "k_timings": dumps(d.timings),
            }
            for d in done
        ]
        self.conn.execute(_COMPLETE_JOB, [{k: r[k] for k in _COMPLETE_JOB_KEYS} for r in rows])
        self.conn.execute(_COMPLETE_ATTEMPT, [{k: r[k] for k in _COMPLETE_ATTEMPT_KEYS} for r in rows])

    def jobs_held_by(self, worker_id: str) -> list[Job]:
        rows = self.conn.execute(
            select(jobs).where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_worker == worker_id)
        )
        return [job_from_row(r) for r in rows]

    def set_wait_reason(self, job_ids: Sequence[str], reason: str | None) -> None:
        for i in range(0, len(job_ids), 500):
            self.conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(list(job_ids[i : i + 500])), jobs.c.state == JobState.QUEUED.value)
                .values(wait_reason=reason)
            )

    # ---------------------------------------------------------------- attempts
    def insert_attempts(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(attempts), [encode(r, ("timings",)) for r in rows])

    def end_attempt(self, job_id: str, epoch: int, **values: Any) -> None:
        self.conn.execute(
            update(attempts)
            .where(attempts.c.job_id == job_id, attempts.c.epoch == epoch)
            .values(**encode(values, ("timings",)))
        )

    def list_attempts(self, job_id: str) -> list[Attempt]:
        rows = self.conn.execute(select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id))
        return [attempt_from_row(r) for r in rows]

    def failed_attempts_of_worker(self, worker_id: str, since: float) -> list[Attempt]:
        rows = self.conn.execute(
            select(attempts).where(
                attempts.c.worker_id == worker_id,
                attempts.c.outcome == AttemptOutcome.FAILED.value,
                attempts.c.ended_at >= since,
                attempts.c.refunded.is_(False),
            )
        )
        return [attempt_from_row(r) for r in rows]

    def mark_attempts_refunded(self, attempt_ids: Sequence[int]) -> None:
        if attempt_ids:
            self.conn.execute(
                update(attempts).where(attempts.c.id.in_(list(attempt_ids))).values(refunded=True)
            )
