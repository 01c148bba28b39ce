"""Transaction statements on the fleet: workers, the model registry, and the queue, demand and
activity reads the fleet page, the reaper and autoscaling use (a mixin of
:class:`sdfleet.store.tx.SqlTx`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from sdfleet.domain import (
    AttemptOutcome,
    Feature,
    JobKind,
    JobState,
    ModelKind,
    ModelRecord,
    Requirements,
    WorkerInfo,
)
from sdfleet.store.dialect import Dialect
from sdfleet.store.rows import WORKER_JSON_COLUMNS, dumps, encode, model_from_row, worker_from_row
from sdfleet.store.schema import attempts, job_models, jobs, models, outputs, workers


class FleetStatements:
    """Workers, the model registry and fleet-wide reads. Runs on the transaction's connection."""

    conn: Connection
    dialect: Dialect

    # ---------------------------------------------------------------- workers
    def insert_worker(self, worker: WorkerInfo) -> None:
        caps = worker.capabilities
        self.conn.execute(
            insert(workers).values(
                id=worker.id,
                name=worker.name,
                tenant=worker.tenant,
                state=worker.state.value,
                kinds=",".join(caps.kinds),
                archs=",".join(caps.archs),
                max_pixels=caps.max_pixels,
                features=int(caps.features),
                gpu_name=worker.gpu_name,
                gpu_memory_mb=worker.gpu_memory_mb,
                price_per_hour=worker.price_per_hour,
                engine=worker.engine,
                version=worker.version,
                registered_at=worker.registered_at,
                last_seen_at=worker.last_seen_at,
                current_jobs=dumps(worker.current_jobs),
                loaded_models=dumps(worker.loaded_models),
                info=dumps(worker.info),
                cached_models=dumps(worker.cached_models),
            )
        )

    def get_worker(self, worker_id: str) -> WorkerInfo | None:
        row = (self.conn.execute(select(workers).where(workers.c.id == worker_id))).first()
        return worker_from_row(row) if row else None

    def list_workers(self, *, seen_since: float | None = None) -> list[WorkerInfo]:
        q = select(workers).order_by(workers.c.registered_at)
        if seen_since is not None:
            q = q.where(workers.c.last_seen_at >= seen_since)
        return [worker_from_row(r) for r in self.conn.execute(q)]

    def update_worker(self, worker_id: str, **values: Any) -> bool:
        res = self.conn.execute(
            update(workers).where(workers.c.id == worker_id).values(**encode(values, WORKER_JSON_COLUMNS))
        )
        return bool(res.rowcount)

    def add_worker_counters(
        self, worker_id: str, *, done: int = 0, failed: int = 0, engine_seconds: float = 0.0
    ) -> None:
        self.conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(
                jobs_done=workers.c.jobs_done + done,
                jobs_failed=workers.c.jobs_failed + failed,
                engine_seconds=workers.c.engine_seconds + engine_seconds,
            )
        )

    # ---------------------------------------------------------------- queue and demand
    def count_jobs_by_state(self) -> dict[str, int]:
        rows = self.conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
        return {r[0]: r[1] for r in rows}

    def queued_requirements(self, limit: int = 1000) -> list[tuple[str, Requirements, float, str | None]]:
        """(job id, requirements, queued_at, wait_reason) of the oldest queued jobs."""
        rows = self.conn.execute(
            select(
                jobs.c.id,
                jobs.c.kind,
                jobs.c.req_arch,
                jobs.c.req_pixels,
                jobs.c.req_features,
                jobs.c.req_model,
                jobs.c.queued_at,
                jobs.c.wait_reason,
            )
            .where(jobs.c.state == JobState.QUEUED.value)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        return [
            (r[0], Requirements(JobKind(r[1]), r[2], r[3], Feature(r[4]), r[5]), r[6], r[7]) for r in rows
        ]

    def model_demand(self) -> dict[str, dict[str, float]]:
        """Per model name, over queued and running jobs (checkpoints from ``req_model``, the rest
        from ``job_models``): ``queued``, ``running``, ``queued_at_sum`` and ``oldest_queued_at``
        (of the queued ones). Jobs naming no model are not counted."""
        live = (JobState.QUEUED.value, JobState.RUNNING.value)
        stats = (func.count(), func.sum(jobs.c.queued_at), func.min(jobs.c.queued_at))
        checkpoints = (
            select(jobs.c.req_model, jobs.c.state, *stats)
            .where(jobs.c.state.in_(live), jobs.c.req_model.is_not(None))
            .group_by(jobs.c.req_model, jobs.c.state)
        )
        others = (
            select(job_models.c.name, jobs.c.state, *stats)
            .select_from(jobs.join(job_models, job_models.c.job_id == jobs.c.id))
            .where(jobs.c.state.in_(live))
            .group_by(job_models.c.name, jobs.c.state)
        )
        result: dict[str, dict[str, float]] = {}
        for query in (checkpoints, others):
            for name, state, count, queued_sum, oldest in self.conn.execute(query):
                row = result.setdefault(
                    name, {"queued": 0, "running": 0, "queued_at_sum": 0.0, "oldest_queued_at": 0.0}
                )
                row[state] += count
                if state == JobState.QUEUED.value:
                    row["queued_at_sum"] += float(queued_sum or 0.0)
                    first = float(oldest) if oldest is not None else 0.0
                    row["oldest_queued_at"] = min(row["oldest_queued_at"] or first, first)
        return result

    def recent_model_waits(self, since: float, limit: int = 2000) -> dict[str, list[float]]:
        """Per model name, the queue waits (first hand-out − submit) of those of the newest
        ``limit`` jobs that were first handed out since ``since`` (a bounded read, newest id first
        through the primary key, whatever the size of the table)."""
        rows = self.conn.execute(
            select(jobs.c.id, jobs.c.req_model, jobs.c.created_at, jobs.c.started_at)
            .order_by(jobs.c.id.desc())
            .limit(limit)
        ).all()
        wait_of = {r[0]: max(0.0, r[3] - r[2]) for r in rows if r[3] is not None and r[3] >= since}
        waits: dict[str, list[float]] = {}
        for r in rows:
            if r[1] is not None and r[0] in wait_of:
                waits.setdefault(r[1], []).append(wait_of[r[0]])
        ids = sorted(wait_of)
        for i in range(0, len(ids), 500):
            query = select(job_models.c.job_id, job_models.c.name).where(
                job_models.c.job_id.in_(ids[i : i + 500])
            )
            for job_id, name in self.conn.execute(query):
                waits.setdefault(name, []).append(wait_of[job_id])
        return waits

    # ---------------------------------------------------------------- fleet activity (web page charts)
    def activity_by_minute(self, since: float, until: float) -> dict[int, dict[str, float]]:
        """What the fleet finished per minute in ``[since, until)``: minute index (0 is the minute
        starting at ``since``) → succeeded and failed attempts, images, engine seconds and cost
        (of every attempt that ended, interrupted ones too: that GPU time was paid for).

        Reads attempts by worker through ``ix_attempts_worker_outcome``, so it touches only the
        window's rows; minutes in which nothing ended are absent."""
        worker_ids = list(self.conn.execute(select(workers.c.id)).scalars())
        if not worker_ids:
            return {}
        minute = self.dialect.minute_index(attempts.c.ended_at, since)
        ended = (
            attempts.c.worker_id.in_(worker_ids),
            attempts.c.outcome != AttemptOutcome.RUNNING.value,
            attempts.c.ended_at >= since,
            attempts.c.ended_at < until,
        )
        result: dict[int, dict[str, float]] = {}

        def bucket(index: int) -> dict[str, float]:
            return result.setdefault(
                int(index), {"succeeded": 0, "failed": 0, "images": 0, "engine_seconds": 0.0, "cost_usd": 0.0}
            )

        rows = self.conn.execute(
            select(
                minute,
                attempts.c.outcome,
                func.count(),
                func.coalesce(func.sum(attempts.c.engine_seconds), 0.0),
                func.coalesce(func.sum(attempts.c.cost_usd), 0.0),
            )
            .where(*ended)
            .group_by(minute, attempts.c.outcome)
        )
        for index, outcome, count, seconds, cost in rows:
            row = bucket(index)
            if outcome in (AttemptOutcome.SUCCEEDED.value, AttemptOutcome.FAILED.value):
                row[outcome] += count
            row["engine_seconds"] += float(seconds)
            row["cost_usd"] += float(cost)
        images = self.conn.execute(
            select(minute, func.count())
            .select_from(attempts.join(outputs, outputs.c.job_id == attempts.c.job_id))
            .where(*ended, attempts.c.outcome == AttemptOutcome.SUCCEEDED.value)
            .group_by(minute)
        )
        for index, count in images:
            bucket(index)["images"] += count
        return result

    # ---------------------------------------------------------------- model registry
    def upsert_model(self, model: ModelRecord) -> None:
        values = {
            "kind": model.kind.value,
            "arch": model.arch,
            "source": model.source,
            "sha256": model.sha256,
            "size": model.size,
            "trigger_words": dumps(model.trigger_words),
            "default_weight": model.default_weight,
            "description": model.description,
            "resolution": model.resolution,
            "scale": model.scale,
        }
        done = self.conn.execute(update(models).where(models.c.name == model.name).values(**values))
        if not done.rowcount:
            self.conn.execute(insert(models).values(name=model.name, created_at=model.created_at, **values))

    def get_models(self, names: Sequence[str]) -> dict[str, ModelRecord]:
        if not names:
            return {}
        rows = self.conn.execute(select(models).where(models.c.name.in_(sorted(set(names)))))
        return {r._mapping["name"]: model_from_row(r) for r in rows}

    def list_models(self, kind: ModelKind | None = None) -> list[ModelRecord]:
        query = select(models).order_by(models.c.kind, models.c.name)
        if kind is not None:
            query = query.where(models.c.kind == kind.value)
        return [model_from_row(r) for r in self.conn.execute(query)]

    def delete_model(self, name: str) -> bool:
        return bool(self.conn.execute(delete(models).where(models.c.name == name)).rowcount)
