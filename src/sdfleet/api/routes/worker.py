"""The worker protocol: register, claim (long-poll, several jobs), heartbeat, upload, complete,
fail, release, stop. Only ``worker``-scoped keys reach it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import AppContext, Ctx, WorkerAuth
from sdfleet.api.routes.worker_models import claimed_models
from sdfleet.blobs import verify_signed
from sdfleet.blobs.signing import MAX_SIGNATURE_LENGTH
from sdfleet.domain import UNREADABLE_SPEC, Capabilities, Feature, Job, JobKind, WorkerState
from sdfleet.errors import LimitExceeded, SdfleetError, StaleLease, ValidationError
from sdfleet.jobs.blobkeys import LORA_CONTENT_TYPE, attempt_key, checkpoint_key, output_key
from sdfleet.jobs.inputs import BLOB_REF, input_refs
from sdfleet.jobs.policy import upload_allowed
from sdfleet.jobs.registry import named_models
from sdfleet.jobs.types import Beat, Completion, OutputReport, Registration
from sdfleet.validation import check_tree
from sdfleet.wire import (
    BeatAnswerView,
    BeatItem,
    CheckpointAnswer,
    CheckpointReport,
    CheckpointUploadRequest,
    ClaimedJob,
    ClaimRequest,
    ClaimResponse,
    CompleteItem,
    CompleteRequest,
    CompleteResponse,
    CompleteResultView,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobStateView,
    ModelSource,
    RegisterRequest,
    RegisterResponse,
    ReleaseRequest,
    ResumeCheckpoint,
    StopRequest,
    UploadRequest,
    UploadTarget,
)

router = APIRouter(prefix="/v1/worker", tags=["worker"], route_class=CheckedRoute)
UPLOAD_URL_SECONDS = 3600.0
INPUT_URL_SECONDS = 3600.0
CHECKPOINT_URL_SECONDS = 6 * 3600.0
log = logging.getLogger("sdfleet.api.worker")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def _json(model: BaseModel) -> Response:
    """Serialize a reply once, with pydantic's own encoder (the hot worker routes skip FastAPI's
    generic response encoding, which costs more than the work behind them)."""
    return Response(model.model_dump_json(), media_type="application/json")


def _output_types(job: Job) -> list[str]:
    """The content type of each output of a job: images in the spec's format; for a training job the
    LoRA file (0), then the final validation images (PNG)."""
    if job.kind == JobKind.TRAIN_LORA:
        return [LORA_CONTENT_TYPE] + ["image/png"] * (job.images_expected - 1)
    ct = CONTENT_TYPES.get(str(job.spec.get("output_format", "png")), "image/png")
    return [ct] * job.images_expected


def _resume_of(ctx: AppContext, job: Job) -> ResumeCheckpoint | None:
    latest = job.latest_checkpoint
    if job.kind != JobKind.TRAIN_LORA or latest is None:
        return None
    key = str(latest["key"])
    return ResumeCheckpoint(
        step=int(latest["step"]),
        key=key,
        url=ctx.blobs.get_url(key, CHECKPOINT_URL_SECONDS),
        size=latest.get("size"),
        sha256=latest.get("sha256"),
    )


def _upload_target(ctx: AppContext, job: Job, epoch: int, index: int, content_type: str) -> UploadTarget:
    key = output_key(job, epoch, index, content_type)
    return UploadTarget(
        index=index,
        key=key,
        url=ctx.blobs.put_url(key, UPLOAD_URL_SECONDS, content_type),
        content_type=content_type,
        headers=ctx.blobs.put_headers(),
    )


def _claimed_job(ctx: AppContext, job: Job, models: list[ModelSource]) -> str:
    """One job of a claim reply, serialized (raises when the stored job cannot be put in one)."""
    types = _output_types(job)
    return ClaimedJob(
        job_id=job.id,
        epoch=job.lease_epoch,
        kind=job.kind.value,
        params=job.spec,
        lease_expires_at=job.lease_expires_at,
        uploads=[_upload_target(ctx, job, job.lease_epoch, i, ct) for i, ct in enumerate(types)],
        inputs={
            ref: ctx.blobs.get_url(ref.removeprefix(BLOB_REF), INPUT_URL_SECONDS)
            for ref in input_refs(job.spec)
        },
        models=models,
        resume=_resume_of(ctx, job),
    ).model_dump_json()


def _check_spec(spec: object, max_depth: int) -> None:
    """Raise when a stored spec cannot go to a worker: not an object, unreadable in the store
    (:data:`~sdfleet.domain.UNREADABLE_SPEC`), or holding text or numbers no JSON reply may carry."""
    if not isinstance(spec, dict):
        raise ValidationError(f"the stored spec is {type(spec).__name__}, not an object", field="params")
    if UNREADABLE_SPEC in spec:
        raise ValidationError(str(spec[UNREADABLE_SPEC]), field="params")
    try:  # the C encoder says yes for nearly every spec; only a refusal is walked, to name the field
        json.dumps(spec, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        pass
    else:
        return
    check_tree(spec, max_depth=max_depth, prefix=("params",))


def _printable(exc: BaseException) -> str:
    """An exception as text that any store and any JSON encoder can hold."""
    text = f"{type(exc).__name__}: {exc}"[:500]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@router.post("/register")
async def register(body: RegisterRequest, ctx: Ctx, principal: WorkerAuth) -> RegisterResponse:
    """Announce a worker: its GPU, price per hour and what it can run."""
    caps = body.capabilities
    worker = await ctx.jobs.register_worker(
        principal.tenant,
        Registration(
            name=body.name,
            capabilities=Capabilities(
                kinds=tuple(caps.kinds),
                archs=tuple(caps.archs),
                max_pixels=caps.max_pixels,
                features=Feature.from_names(caps.features),
            ),
            gpu_name=body.gpu_name,
            gpu_memory_mb=body.gpu_memory_mb,
            price_per_hour=body.price_per_hour,
            engine=body.engine,
            version=body.version,
            info=body.info,
        ),
    )
    return RegisterResponse(
        worker_id=worker.id,
        lease_seconds=ctx.settings.lease_seconds,
        heartbeat_seconds=ctx.settings.heartbeat_seconds,
        max_inline_output_bytes=0 if ctx.blobs.direct_upload else ctx.settings.limits.max_inline_output_bytes,
    )


@router.post("/claim", response_model=ClaimResponse)
async def claim(body: ClaimRequest, request: Request, ctx: Ctx, principal: WorkerAuth) -> Response:
    """Take up to ``max_jobs`` jobs, waiting up to ``wait`` seconds when there are none (a worker
    that hangs up stops the wait, so no job is handed to a connection nobody reads)."""
    result = await ctx.jobs.claim(
        body.worker_id,
        principal.tenant,
        max_jobs=body.max_jobs,
        wait=body.wait,
        loaded_models=body.loaded_models,
        gone=request.is_disconnected,
        cached_models=body.cached_models,
    )
    # each job's reply is built on its own: a job that cannot be put in one (data stored before it
    # was validated, a reference that no longer resolves) fails alone and lets go of its lease
    parts: list[str] = []
    rejected: list[tuple[str, int, str]] = []
    readable = []
    for job in result.jobs:
        try:
            _check_spec(job.spec, ctx.settings.limits.max_json_depth)
            named_models(job.spec)
            readable.append(job)
        except Exception as exc:
            rejected.append((job.id, job.lease_epoch, _printable(exc)))
    try:
        needs = await claimed_models(ctx, [(job.id, job.spec) for job in readable])
    except SdfleetError:
        raise
    except Exception:  # not one job's fault that we can tell: per job below, without models
        log.exception("worker.claim_models_failed worker_id=%s", body.worker_id)
        needs = {}
    for job in readable:
        try:
            parts.append(_claimed_job(ctx, job, needs.get(job.id, [])))
        except Exception as exc:
            rejected.append((job.id, job.lease_epoch, _printable(exc)))
    if rejected:
        await ctx.jobs.reject_claimed(body.worker_id, rejected)
    message = None
    if result.worker_state == WorkerState.QUARANTINED:
        worker = await ctx.queries.worker(body.worker_id)
        message = f"quarantined: {worker.quarantine_reason if worker else ''}"
    rest = ClaimResponse(
        jobs=[], worker_state=result.worker_state.value, lease_seconds=result.lease_seconds, message=message
    ).model_dump_json()
    head = '{"jobs":[]'
    assert rest.startswith(head)
    return Response('{"jobs":[' + ",".join(parts) + "]" + rest[len(head) :], media_type="application/json")


def _beat_info(beat: BeatItem) -> dict[str, float] | None:
    info = {
        k: v
        for k, v in (("loss", beat.loss), ("it_per_s", beat.it_per_s), ("eta_seconds", beat.eta_seconds))
        if v is not None and math.isfinite(v)
    }
    return info or None


@router.post("/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(body: HeartbeatRequest, ctx: Ctx, principal: WorkerAuth) -> Response:
    """Keep leases alive and report progress. Each job is answered continue, cancel or lost."""
    answers, state = await ctx.jobs.heartbeat(
        body.worker_id,
        principal.tenant,
        [Beat(b.job_id, b.epoch, b.step, b.total, _beat_info(b)) for b in body.jobs],
        body.loaded_models,
        cached_models=body.cached_models,
    )
    return _json(
        HeartbeatResponse(
            jobs=[BeatAnswerView(job_id=a.job_id, epoch=a.epoch, action=a.action) for a in answers],
            worker_state=state.value,
            lease_seconds=ctx.settings.lease_seconds,
        )
    )


@router.post("/upload")
async def upload_url(body: UploadRequest, ctx: Ctx, principal: WorkerAuth) -> UploadTarget:
    """A fresh upload URL for one output of a job this worker holds."""
    job = (await ctx.jobs.held_jobs(body.worker_id, principal.tenant, [(body.job_id, body.epoch)])).get(
        body.job_id
    )
    if job is None:
        raise StaleLease(f"lease epoch {body.epoch} of job {body.job_id} is not current", field="epoch")
    if body.index >= job.images_expected:
        raise ValidationError(f"job {job.id} has {job.images_expected} outputs", field="index")
    return _upload_target(ctx, job, body.epoch, body.index, body.content_type)


def _decode_inline(ctx: AppContext, data_b64: str) -> bytes:
    limit = ctx.settings.limits.max_inline_output_bytes
    if ctx.blobs.direct_upload:
        raise ValidationError(
            "inline outputs are not accepted with an object store: PUT to the upload URL",
            field="outputs.data_b64",
        )
    if len(data_b64) > limit * 4 // 3 + 4:
        raise LimitExceeded(f"inline outputs are limited to {limit} bytes", field="outputs.data_b64")
    try:
        return base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("data_b64 is not valid base64", field="outputs.data_b64") from exc


async def _completions(
    ctx: AppContext, worker_id: str, tenant: str | None, items: list[CompleteItem]
) -> tuple[list[Completion], dict[str, list[str]]]:
    """Turn reported outputs into stored blobs — fenced first: only for jobs this worker holds at
    the item's epoch, under the key derived from the job and epoch (a key the worker names must be
    that one), never replacing a stored blob. Items for jobs it does not hold write nothing and go
    on with no outputs (the service answers them stale or duplicate). Returns the completions and,
    per job, the keys written now (to delete if that completion is not accepted after all)."""
    held = await ctx.jobs.held_jobs(worker_id, tenant, [(i.job_id, i.epoch) for i in items])
    plans: list[tuple[CompleteItem, list[OutputReport]]] = []
    writes: list[tuple[str, str, bytes, str]] = []  # job id, key, data, content type
    uploaded: list[str] = []
    for item in items:
        job = held.get(item.job_id)
        reports: list[OutputReport] = []
        if job is not None:
            for o in item.outputs:
                if o.index >= job.images_expected:
                    raise ValidationError(
                        f"job {job.id} has {job.images_expected} outputs", field="outputs.index"
                    )
                key = output_key(job, item.epoch, o.index, o.content_type)
                if o.key is not None and o.key != key:
                    raise ValidationError(
                        f"output {o.index} of job {item.job_id} must be stored at {key!r}, not {o.key!r}",
                        field="outputs.key",
                    )
                size, sha = o.size or 0, o.sha256
                if o.data_b64 is not None:
                    data = _decode_inline(ctx, o.data_b64)
                    writes.append((job.id, key, data, o.content_type))
                    size, sha = len(data), hashlib.sha256(data).hexdigest()
                else:
                    uploaded.append(key)
                reports.append(
                    OutputReport(
                        index=o.index,
                        content_type=o.content_type,
                        size=size,
                        blob_key=key,
                        seed=o.seed,
                        infotext=o.infotext,
                        sha256=sha,
                    )
                )
        plans.append((item, reports))
    sizes: dict[str, int | None] = {}
    if uploaded:
        sizes = await ctx.blobs.sizes(uploaded)
        missing = [k for k in uploaded if sizes.get(k) is None]
        if missing:
            raise ValidationError(f"not uploaded: {', '.join(missing[:5])}", field="outputs")
    written: dict[str, list[str]] = {}
    stored = await ctx.blobs.put_new_many([(key, data, ct) for _, key, data, ct in writes])
    for (job_id, key, _, _), new in zip(writes, stored, strict=True):
        if new:
            written.setdefault(job_id, []).append(key)
    completions = []
    for item, reports in plans:
        for r in reports:
            r.size = sizes.get(r.blob_key) or r.size
        completions.append(
            Completion(
                job_id=item.job_id,
                epoch=item.epoch,
                outputs=reports,
                engine_seconds=item.engine_seconds,
                timings=item.timings,
                result=item.result,
            )
        )
    return completions, written


async def _discard(ctx: AppContext, keys: list[str]) -> None:
    """Delete blobs written for a report that was not accepted (a rejected write leaves no file)."""
    for key in keys:
        try:
            await ctx.blobs.delete(key)
        except Exception as exc:  # an orphan, not an error of the report
            log.warning("worker.discard_failed key=%s error=%s", key, exc)


@router.post("/complete", response_model=CompleteResponse)
async def complete(body: CompleteRequest, ctx: Ctx, principal: WorkerAuth) -> Response:
    """Report finished jobs with their outputs. Accepted exactly once; a stale epoch is 409 for a
    single completion and ``"stale"`` per item in a batch."""
    if body.results is not None:
        items = body.results
    elif body.job_id is not None and body.epoch is not None:
        items = [
            CompleteItem(
                job_id=body.job_id,
                epoch=body.epoch,
                outputs=body.outputs,
                engine_seconds=body.engine_seconds,
                timings=body.timings,
                result=body.result,
            )
        ]
    else:
        raise ValidationError("send job_id and epoch, or results", field="job_id")
    completions, written = await _completions(ctx, body.worker_id, principal.tenant, items)
    try:
        results = await ctx.jobs.complete(body.worker_id, principal.tenant, completions)
    except BaseException:
        await _discard(ctx, [k for keys in written.values() for k in keys])
        raise
    # a lease lost between the fence and the record: what was written for it goes again
    await _discard(ctx, [k for r in results if r.status != "accepted" for k in written.get(r.job_id, [])])
    if body.results is None and results[0].status == "stale":
        raise StaleLease(results[0].message, field="epoch")
    return _json(
        CompleteResponse(
            results=[CompleteResultView(job_id=r.job_id, status=r.status, message=r.message) for r in results]
        )
    )


@router.post("/fail")
async def fail(body: FailRequest, ctx: Ctx, principal: WorkerAuth) -> JobStateView:
    """Report that a job failed here; ``retryable`` lets it run elsewhere (never here again)."""
    message = body.message
    if body.field and not message.startswith(body.field):
        message = f"{body.field}: {message}"
    job = await ctx.jobs.fail(
        body.worker_id,
        principal.tenant,
        body.job_id,
        body.epoch,
        code=body.code,
        message=message,
        retryable=body.retryable,
        engine_seconds=body.engine_seconds,
    )
    return JobStateView(job_id=job.id, state=job.state.value)


@router.post("/release")
async def release(body: ReleaseRequest, ctx: Ctx, principal: WorkerAuth) -> JobStateView:
    """Give a job back (the worker is stopping). Not a failure."""
    job = await ctx.jobs.release(
        body.worker_id,
        principal.tenant,
        body.job_id,
        body.epoch,
        reason=body.reason,
        engine_seconds=body.engine_seconds,
    )
    return JobStateView(job_id=job.id, state=job.state.value)


@router.post("/jobs/{job_id}/checkpoint/upload")
async def checkpoint_upload(
    job_id: str, body: CheckpointUploadRequest, ctx: Ctx, principal: WorkerAuth
) -> UploadTarget:
    """Where to PUT a training checkpoint of a job this worker holds (fenced by the lease epoch):
    a presigned URL on an object store, a signed orchestrator URL with the local blob store."""
    job = (await ctx.jobs.held_jobs(body.worker_id, principal.tenant, [(job_id, body.epoch)])).get(job_id)
    if job is None:
        raise StaleLease(f"lease epoch {body.epoch} of job {job_id} is not current", field="epoch")
    if job.kind != JobKind.TRAIN_LORA:
        raise ValidationError(f"job {job_id} is not a training job", field="job_id")
    key = checkpoint_key(job, body.epoch, body.step)
    return UploadTarget(
        index=body.step,
        key=key,
        url=ctx.blobs.put_url(key, CHECKPOINT_URL_SECONDS, "application/octet-stream"),
        content_type="application/octet-stream",
        headers=ctx.blobs.put_headers(),
    )


@router.post("/jobs/{job_id}/checkpoint")
async def checkpoint(
    job_id: str, body: CheckpointReport, ctx: Ctx, principal: WorkerAuth
) -> CheckpointAnswer:
    """Record a stored training checkpoint (fenced: a stale epoch is 409). Checkpoints beyond the job's
    ``keep_checkpoints`` are deleted from the blob store; a ``job.checkpoint`` webhook goes out."""
    size = await ctx.blobs.size(body.key)
    if size is None:
        raise ValidationError(f"not uploaded: {body.key}", field="key")
    recorded = await ctx.jobs.record_checkpoint(
        body.worker_id,
        principal.tenant,
        job_id,
        body.epoch,
        step=body.step,
        key=body.key,
        size=size,
        sha256=body.sha256,
    )
    deleted = 0
    for key in recorded.dropped:
        try:
            await ctx.blobs.delete(key)
            deleted += 1
        except Exception as exc:  # a blob that cannot be deleted now is an orphan, not an error of the job
            log.warning("training.checkpoint_delete_failed job_id=%s key=%s error=%s", job_id, key, exc)
    return CheckpointAnswer(job_id=job_id, step=body.step, kept=recorded.kept, deleted=deleted)


@router.post("/stop")
async def stop(body: StopRequest, ctx: Ctx, principal: WorkerAuth) -> dict[str, str]:
    """The worker is going away (after releasing what it held)."""
    await ctx.jobs.stop_worker(body.worker_id, principal.tenant)
    return {"worker_id": body.worker_id, "state": "stopped"}


@router.put("/blobs/{key:path}", status_code=201)
async def put_blob(
    key: str,
    request: Request,
    ctx: Ctx,
    exp: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=MAX_SIGNATURE_LENGTH)],
) -> dict[str, object]:
    """Receive an upload for a signed URL (local blob store only; object stores take it directly).

    Fenced before a byte is stored: the key must be a per-attempt key (output or checkpoint) of a
    job whose lease is at that epoch now and that is not finished — so a signed URL dies with its
    lease, and once the completion is accepted nothing replaces the output. A stored blob is never
    overwritten (the same bytes again, a retry, are fine)."""
    verify_signed(ctx.signer, "PUT", key, exp, sig)
    target = attempt_key(key)
    job = await ctx.queries.get_job(target.job_id) if target is not None else None
    if not upload_allowed(target, job):
        raise StaleLease(f"{key} is not an upload of a job's current lease", field="key")
    size = await ctx.blobs.put_stream(
        key, request.stream(), ctx.settings.limits.max_upload_bytes, exclusive=True
    )
    return {"key": key, "size": size}
