"""The native jobs API: submit (one or a batch), get, list, cancel, follow events, fetch outputs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError as PydanticValidationError

from sdfleet.api.auth import principal_for, require_scope
from sdfleet.api.checked import CheckedRoute, checked_json
from sdfleet.api.deps import Ctx, User
from sdfleet.api.schemas import binary_request_body, json_request_body
from sdfleet.api.views import job_view
from sdfleet.domain import EventType, Job, JobKind, JobState
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.jobs.inputs import BLOB_REF, ImageLimits, check_image
from sdfleet.netguard import check_url_syntax
from sdfleet.specs.training import to_validation_error
from sdfleet.wire import AccountView, BatchView, JobBatchCreate, JobCreate, JobList, JobView, WebhookSettings

router = APIRouter(tags=["jobs"], route_class=CheckedRoute)
KEEPALIVE_SECONDS = 15.0
_EVENT_ID = re.compile(r"[0-9]{1,18}")  # a Last-Event-ID we sent (anything else replays from the start)
INPUT_TYPES = ("image/png", "image/jpeg", "image/webp")


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=JobView | BatchView,
    openapi_extra=json_request_body(
        JobCreate | JobBatchCreate, 'One job (JobCreate), or several as {"jobs": [...]} (JobBatchCreate)'
    ),
)
async def submit_jobs(
    request: Request,
    ctx: Ctx,
    principal: User,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Response:
    """Submit one job (a ``JobCreate`` body) or several (``{"jobs": [...]}``, at most 1000).

    An ``idempotency_key`` (field, or ``Idempotency-Key`` header for one job) makes a retry
    return the job it created the first time instead of a new one."""
    raw: Any = await checked_json(request)  # strict: UTF-8, finite numbers, storable text, bounded depth
    if not isinstance(raw, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    inputs = ctx.preparer.inputs(principal.tenant)
    try:
        if "jobs" in raw:
            if isinstance(raw["jobs"], list) and len(raw["jobs"]) > ctx.settings.limits.max_jobs_per_batch:
                raise ValidationError(
                    f"at most {ctx.settings.limits.max_jobs_per_batch} jobs per batch", field="jobs"
                )
            batch = JobBatchCreate.model_validate(raw)
            requests = [
                await ctx.preparer.prepare(principal.tenant, b, field_prefix=f"jobs.{i}.", inputs=inputs)
                for i, b in enumerate(batch.jobs)
            ]
        else:
            requests = [
                await ctx.preparer.prepare(
                    principal.tenant,
                    JobCreate.model_validate(raw),
                    idempotency_key=idempotency_key,
                    inputs=inputs,
                )
            ]
    except PydanticValidationError as exc:
        raise to_validation_error(exc) from exc
    await inputs.store()  # every job passed: now their images are written
    submitted = await ctx.jobs.submit(principal.tenant, requests)
    views = [job_view(ctx, request, s.job, [], created=s.created) for s in submitted]
    if "jobs" in raw:
        reply = BatchView(jobs=views, created=sum(1 for s in submitted if s.created))
        # one pass of pydantic's encoder: a batch of 1000 through FastAPI's generic one costs ~0.2 s
        return Response(reply.model_dump_json(), status_code=201, media_type="application/json")
    return Response(
        views[0].model_dump_json(),
        status_code=201 if submitted[0].created else 200,
        media_type="application/json",
    )


@router.post(
    "/v1/inputs",
    status_code=201,
    openapi_extra=binary_request_body(INPUT_TYPES, "The image file's bytes (PNG, JPEG or WebP)"),
)
async def upload_input(request: Request, ctx: Ctx, principal: User) -> dict[str, Any]:
    """Store one input image (PNG, JPEG or WebP bytes as the body) and return its reference
    (``blob:inputs/<tenant>/<sha256>.<ext>``) for ``init_images``, ``mask`` or training ``images``.
    Stored once per content: uploading the same image again returns the same reference. The image is
    checked (real format, pixels, frames, a full decode) before it is stored."""
    body = await request.body()
    limits = ImageLimits.training(ctx.settings.limits)
    if len(body) > limits.max_bytes:
        raise LimitExceeded(f"the image is larger than {limits.max_bytes} bytes", field="body")
    image = await asyncio.to_thread(check_image, body, "body", limits)
    key = image.key(principal.tenant)
    if await ctx.blobs.size(key) is None:
        await ctx.blobs.put(key, image.data, image.mime)
    return {"ref": BLOB_REF + key, "size": len(image.data), "content_type": image.mime}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, ctx: Ctx, principal: User) -> JobView:
    """One job with its progress, outputs (as URLs), error, timings and cost."""
    job = await ctx.jobs.get_job(job_id, principal.tenant_filter)
    return job_view(ctx, request, job, await ctx.queries.outputs(job.id))


@router.get("/v1/jobs")
async def list_jobs(
    request: Request,
    ctx: Ctx,
    principal: User,
    state: Annotated[list[JobState] | None, Query()] = None,
    kind: JobKind | None = None,
    label: Annotated[str | None, Query(description="key:value", max_length=400)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    parent: Annotated[
        str | None,
        Query(max_length=64, description="List this job's child jobs (else: jobs without a parent)"),
    ] = None,
) -> JobList:
    """The caller's jobs, newest first; pass ``next_cursor`` back as ``cursor`` for more. Child jobs (a
    parent's tiles or stages) are listed with ``parent=ID``."""
    label_pair = None
    if label is not None:
        key, sep, value = label.partition(":")
        if not sep:
            raise ValidationError("label must be key:value", field="label")
        label_pair = (key, value)
    page = await ctx.queries.job_page(
        tenant=principal.tenant_filter,
        states=state or (),
        kind=kind,
        label=label_pair,
        before=cursor,
        limit=limit,
        parent=parent,
    )
    jobs = page.jobs
    views = [job_view(ctx, request, j, page.outputs[j.id]) for j in jobs]
    return JobList(jobs=views, next_cursor=jobs[-1].id if len(jobs) == limit else None)


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, ctx: Ctx, principal: User) -> JobView:
    """Cancel: a queued job at once, a running one at its worker's next heartbeat."""
    job = await ctx.jobs.cancel(job_id, principal.tenant_filter)
    return job_view(ctx, request, job, await ctx.queries.outputs(job.id))


@router.get("/v1/jobs/{job_id}/outputs/{index}")
async def get_output(
    job_id: str, index: int, request: Request, ctx: Ctx, principal: User
) -> RedirectResponse:
    """Redirect to a (signed) URL of one output."""
    job = await ctx.jobs.get_job(job_id, principal.tenant_filter)
    outputs = {o.index: o for o in await ctx.queries.outputs(job.id)}
    if index not in outputs:
        raise NotFound(f"job {job_id} has no output {index}", field="index")
    url = ctx.absolute(request, ctx.blobs.get_url(outputs[index].blob_key, 3600))
    return RedirectResponse(url, status_code=307)


async def _streamable_job(job_id: str, request: Request, ctx: Ctx) -> Job:
    if "api_key" in request.query_params:  # keys in URLs land in access logs and browser history
        raise ValidationError(
            "the API key is not accepted in the URL: send it as 'Authorization: Bearer <key>' "
            "(stream with fetch, not EventSource)",
            field="api_key",
        )
    principal = require_scope(await principal_for(request, ctx.keys, ctx.open_mode), "user")
    return await ctx.jobs.get_job(job_id, principal.tenant_filter)


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job: Annotated[Job, Depends(_streamable_job)],
    request: Request,
    ctx: Ctx,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of one job: queued, started, progress, output, requeued, finished.

    The stream replays from the start (or after ``Last-Event-ID``) and ends after ``finished``.
    The key goes in a header like everywhere (never ``?api_key=``): in a browser, read the stream with
    ``fetch`` (as the web page does), not ``EventSource``, which cannot send headers."""
    job_id = job.id
    after = int(last_event_id) if last_event_id and _EVENT_ID.fullmatch(last_event_id) else 0
    quiet_since = time.monotonic()
    while True:
        events = await ctx.queries.events_after(job_id, after)
        for ev in events:
            after = ev.id
            yield ServerSentEvent(
                event=ev.type.value,
                id=str(ev.id),
                data={"job_id": job_id, "type": ev.type.value, "at": ev.created_at, **ev.data},
            )
            if ev.type == EventType.FINISHED:
                return
        if events:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ServerSentEvent(comment="keep-alive")
        if await request.is_disconnected():
            return
        await ctx.notifier.wait_for_job(job_id, ctx.settings.poll_seconds)


@router.get("/v1/account")
async def account(ctx: Ctx, principal: User) -> AccountView:
    """The caller's tenant: webhook settings and secret, usage (jobs, images, cost), and its quotas
    with what is left of each (``quota``)."""
    tenant = await ctx.jobs.ensure_tenant(principal.tenant)
    usage = await ctx.queries.tenant_usage(principal.tenant)
    return AccountView(
        tenant=tenant.id,
        scopes=sorted(principal.scopes),
        webhook_url=tenant.webhook_url,
        webhook_secret=tenant.webhook_secret,
        usage=usage,
        quota=await ctx.jobs.quota_status(principal.tenant),
    )


@router.put("/v1/account/webhook")
async def set_webhook(body: WebhookSettings, ctx: Ctx, principal: User) -> AccountView:
    """Set (or clear with ``null``) the webhook URL that receives every job's events."""
    if body.url:
        check_url_syntax(body.url, "url")
    await ctx.jobs.set_tenant_webhook(principal.tenant, body.url)
    return await account(ctx, principal)
