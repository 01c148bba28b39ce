"""A batch of completions, recorded exactly once each in one transaction: the fencing verdict per
job, the outputs at their per-attempt keys, a training job's LoRA into the registry, then one
statement of each kind for the whole batch. The one completion tail of every job kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdfleet.domain import EventType, Job, JobKind, JobState, Output, WorkerInfo
from sdfleet.jobs.blobkeys import check_outputs
from sdfleet.jobs.policy import completion_verdict
from sdfleet.jobs.training import register_lora
from sdfleet.jobs.transitions import Effects, Transitions
from sdfleet.jobs.types import Completion, CompletionResult, EventRow
from sdfleet.store import CompletedJob, SqlTx


def record_completions(
    tx: SqlTx,
    fx: Effects,
    transitions: Transitions,
    worker: WorkerInfo,
    completions: Sequence[Completion],
    now: float,
) -> list[CompletionResult]:
    """Record ``worker``'s completions (in the caller's transaction): ``accepted``, ``duplicate``
    or ``stale`` for each, the accepted ones succeeded and counted (after the commit, via ``fx``)."""
    jobs_by_id = {j.id: j for j in tx.get_jobs([c.job_id for c in completions], lock=True)}
    results: list[CompletionResult] = []
    finished: list[CompletedJob] = []
    outputs: list[tuple[Output, str]] = []
    events: list[EventRow] = []
    done_jobs: list[Job] = []
    for c in completions:
        job = jobs_by_id.get(c.job_id)
        verdict = completion_verdict(job, c, worker.id)
        if verdict is not None or job is None:
            results.append(verdict or CompletionResult(c.job_id, "stale", "no such job"))
            continue
        check_outputs(job, c)
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
            events.append((job.id, job.tenant, EventType.OUTPUT, {"index": o.index, "seed": o.seed}, now))
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
        if job.parent_id:
            fx.parents.add(job.parent_id)
        results.append(CompletionResult(job.id, "accepted"))
        fx.count("completed")
        fx.observe("job_latency", max(0.0, now - job.created_at))
    if finished:
        # the rows are locked (or the database is, on SQLite) and were checked above:
        # one statement of each kind for the whole batch
        tx.complete_jobs(finished, worker.id, now)
        tx.insert_outputs_of(outputs)
        tx.insert_events(events)
        transitions.queue_webhooks(tx, fx, done_jobs, "job.finished", now)
        tx.add_worker_counters(
            worker.id, done=len(finished), engine_seconds=sum(f.engine_seconds for f in finished)
        )
    return results
