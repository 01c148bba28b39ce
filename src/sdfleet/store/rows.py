"""Row ↔ record mappers: a table row as the domain type or store record it stores, and back.

``*_from_row`` read a row (``Row``) into its record; :func:`job_row` and :func:`encode` spell
the column values written; JSON columns are text (:func:`dumps`, :func:`loads`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from sdfleet.domain import (
    UNREADABLE_SPEC,
    Attempt,
    AttemptOutcome,
    Capabilities,
    Event,
    EventType,
    Feature,
    Job,
    JobKind,
    JobState,
    ModelKind,
    ModelRecord,
    Output,
    Requirements,
    WorkerInfo,
    WorkerState,
)
from sdfleet.store.records import ApiKeyRecord, OutboxMessage, Tenant

dumps = json.dumps


def loads(value: str | None, default: Any) -> Any:
    return json.loads(value) if value else default


def spec_from_column(value: str) -> Any:
    """A stored spec; one that is not JSON reads as ``{UNREADABLE_SPEC: why}`` instead of raising, so a
    claim that picks it can fail that job alone rather than break (and roll back) for every job."""
    try:
        return json.loads(value)
    except ValueError as exc:
        return {UNREADABLE_SPEC: f"the stored spec is not JSON ({exc})"}


def job_from_row(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        tenant=m["tenant"],
        kind=JobKind(m["kind"]),
        state=JobState(m["state"]),
        spec=spec_from_column(m["spec"]),
        priority=m["priority"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        queued_at=m["queued_at"],
        requirements=Requirements(
            kind=JobKind(m["kind"]),
            arch=m["req_arch"],
            pixels=m["req_pixels"],
            features=Feature(m["req_features"]),
            model=m["req_model"],
        ),
        idempotency_key=m["idempotency_key"],
        webhook_url=m["webhook_url"],
        labels=loads(m["labels"], {}),
        lease_epoch=m["lease_epoch"],
        lease_worker=m["lease_worker"],
        lease_expires_at=m["lease_expires_at"],
        failures=m["failures"],
        interruptions=m["interruptions"],
        stalled=bool(m["stalled"]),
        cancel_requested=bool(m["cancel_requested"]),
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        progress_step=m["progress_step"],
        progress_total=m["progress_total"],
        wait_reason=m["wait_reason"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        engine_seconds=m["engine_seconds"],
        cost_usd=m["cost_usd"],
        result=loads(m["result"], {}),
        checkpoints=loads(m["checkpoints"], []),
        progress_info=loads(m["progress_info"], {}),
        parent_id=m["parent_id"],
        stage=m["stage"],
        gpu_charge=m["gpu_charge"],
    )


def attempt_from_row(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(
        id=m["id"],
        job_id=m["job_id"],
        worker_id=m["worker_id"],
        epoch=m["epoch"],
        started_at=m["started_at"],
        last_heartbeat_at=m["last_heartbeat_at"],
        outcome=AttemptOutcome(m["outcome"]),
        ended_at=m["ended_at"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        engine_seconds=m["engine_seconds"],
        price_per_hour=m["price_per_hour"],
        cost_usd=m["cost_usd"],
        refunded=bool(m["refunded"]),
        timings=loads(m["timings"], {}),
    )


def worker_from_row(row: Row[Any]) -> WorkerInfo:
    m = row._mapping
    return WorkerInfo(
        id=m["id"],
        name=m["name"],
        tenant=m["tenant"],
        state=WorkerState(m["state"]),
        capabilities=Capabilities(
            kinds=tuple(k for k in m["kinds"].split(",") if k),
            archs=tuple(a for a in m["archs"].split(",") if a),
            max_pixels=m["max_pixels"],
            features=Feature(m["features"]),
        ),
        gpu_name=m["gpu_name"],
        gpu_memory_mb=m["gpu_memory_mb"],
        price_per_hour=m["price_per_hour"],
        engine=m["engine"],
        version=m["version"],
        registered_at=m["registered_at"],
        last_seen_at=m["last_seen_at"],
        quarantined_until=m["quarantined_until"],
        quarantine_reason=m["quarantine_reason"],
        jobs_done=m["jobs_done"],
        jobs_failed=m["jobs_failed"],
        engine_seconds=m["engine_seconds"],
        current_jobs=loads(m["current_jobs"], []),
        loaded_models=loads(m["loaded_models"], []),
        info=loads(m["info"], {}),
        cached_models=loads(m["cached_models"], []),
    )


def output_from_row(row: Row[Any]) -> Output:
    m = row._mapping
    return Output(
        job_id=m["job_id"],
        index=m["idx"],
        blob_key=m["blob_key"],
        content_type=m["content_type"],
        size=m["size"],
        seed=m["seed"],
        infotext=m["infotext"],
        created_at=m["created_at"],
        sha256=m["sha256"],
    )


def event_from_row(row: Row[Any]) -> Event:
    m = row._mapping
    return Event(
        id=m["id"],
        job_id=m["job_id"],
        tenant=m["tenant"],
        type=EventType(m["type"]),
        data=json.loads(m["data"]),
        created_at=m["created_at"],
    )


def job_row(job: Job) -> dict[str, Any]:
    """The column values of a new job."""
    req = job.requirements
    return {
        "id": job.id,
        "tenant": job.tenant,
        "kind": job.kind.value,
        "state": job.state.value,
        "priority": job.priority,
        "spec": dumps(job.spec),
        "req_arch": req.arch,
        "req_pixels": req.pixels,
        "req_features": int(req.features),
        "req_model": req.model,
        "idempotency_key": job.idempotency_key,
        "webhook_url": job.webhook_url,
        "labels": dumps(job.labels),
        "lease_epoch": 0,
        "failures": 0,
        "interruptions": 0,
        "stalled": False,
        "cancel_requested": False,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "queued_at": job.created_at,
        "progress_step": 0,
        "progress_total": job.progress_total,
        "engine_seconds": 0.0,
        "cost_usd": 0.0,
        "result": "{}",
        "checkpoints": "[]",
        "progress_info": "{}",
        "parent_id": job.parent_id,
        "stage": job.stage,
        "gpu_charge": job.gpu_charge,
    }


JOB_JSON_COLUMNS = ("spec", "labels", "result", "checkpoints", "progress_info")
WORKER_JSON_COLUMNS = ("current_jobs", "loaded_models", "info", "cached_models")


def encode(values: dict[str, Any], json_columns: Iterable[str]) -> dict[str, Any]:
    out = dict(values)
    for key in json_columns:
        if key in out and not isinstance(out[key], str):
            out[key] = dumps(out[key])
    for key, value in out.items():
        if isinstance(value, JobState | AttemptOutcome | WorkerState | EventType):
            out[key] = value.value
    return out


def tenant_from_row(row: Row[Any]) -> Tenant:
    m = row._mapping
    limits = loads(m["limits"], {})
    return Tenant(
        id=m["id"],
        webhook_url=m["webhook_url"],
        webhook_secret=m["webhook_secret"],
        created_at=m["created_at"],
        limits=limits if isinstance(limits, dict) else {},
        weight=m["weight"],
    )


def model_from_row(row: Row[Any]) -> ModelRecord:
    m = row._mapping
    return ModelRecord(
        name=m["name"],
        kind=ModelKind(m["kind"]),
        arch=m["arch"],
        source=m["source"],
        sha256=m["sha256"],
        size=m["size"],
        trigger_words=loads(m["trigger_words"], []),
        default_weight=m["default_weight"],
        description=m["description"],
        created_at=m["created_at"],
        resolution=m["resolution"],
        scale=m["scale"],
    )


def api_key_from_row(row: Row[Any]) -> ApiKeyRecord:
    m = row._mapping
    return ApiKeyRecord(
        id=m["id"],
        tenant=m["tenant"],
        name=m["name"],
        key_hash=m["key_hash"],
        prefix=m["prefix"],
        scopes=tuple(m["scopes"].split(",")),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


def outbox_from_row(row: Row[Any]) -> OutboxMessage:
    m = row._mapping
    return OutboxMessage(
        message_id=m["message_id"],
        job_id=m["job_id"],
        tenant=m["tenant"],
        url=m["url"],
        event_type=m["event_type"],
        payload=m["payload"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        attempts=m["attempts"],
        state=m["state"],
        last_error=m["last_error"],
        delivered_at=m["delivered_at"],
    )
