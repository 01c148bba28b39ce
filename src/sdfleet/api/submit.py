"""Validating a job before it is stored: limits, kind, webhook URL, the models it names, its input
images. Every API that creates jobs (the native ``/v1/jobs`` and the A1111 ``/sdapi/v1`` routes) goes
through :func:`prepare_job`, so a job is held to the same rules whichever door it came in by."""

from __future__ import annotations

from sdfleet.api.deps import AppContext
from sdfleet.domain import JobKind
from sdfleet.errors import ValidationError
from sdfleet.jobs.inputs import store_inputs
from sdfleet.jobs.netguard import check_url_syntax
from sdfleet.jobs.service import JobRequest
from sdfleet.wire import JobCreate


async def prepare_job(
    ctx: AppContext,
    tenant: str,
    body: JobCreate,
    *,
    field_prefix: str = "",
    params_prefix: str | None = None,
    idempotency_key: str | None = None,
) -> JobRequest:
    """Check one job body and store its inline input images; return the request to submit.

    Errors name the offending field as ``{field_prefix}{name}`` for the job's own fields (``webhook_url``,
    ``arch``) and ``{params_prefix}{name}`` for its parameters (default ``{field_prefix}params.``).
    """
    prefix = field_prefix
    params = f"{prefix}params." if params_prefix is None else params_prefix
    try:
        body.params.check_limits(ctx.settings.limits)
    except ValidationError as exc:
        exc.field = f"{params}{exc.field}" if exc.field else exc.field
        raise
    if body.kind == JobKind.IMG2IMG and not body.params.init_images:
        raise ValidationError("img2img needs at least one image in init_images", field=f"{params}init_images")
    if body.kind == JobKind.TXT2IMG and (body.params.init_images or body.params.mask):
        raise ValidationError(
            "txt2img takes no init_images or mask: use kind img2img", field=f"{params}init_images"
        )
    if body.webhook_url:
        check_url_syntax(body.webhook_url, f"{prefix}webhook_url")
    use = await ctx.models.resolve(body.params, params)
    if body.arch and use.arch and body.arch != use.arch:
        raise ValidationError(
            f"arch {body.arch} does not match the checkpoint's ({use.arch})", field=f"{prefix}arch"
        )
    spec = await store_inputs(body.params, tenant, ctx.blobs, ctx.settings.limits.max_upload_bytes, params)
    return JobRequest(
        kind=body.kind,
        spec=spec,
        priority=body.priority,
        idempotency_key=body.idempotency_key or idempotency_key,
        webhook_url=body.webhook_url,
        labels=body.labels,
        arch=body.arch or use.arch,
    )
