"""Validating a job before it is stored: limits, kind, webhook URL, the models it names, its input
images. Every API that creates jobs (the native ``/v1/jobs`` and the A1111 ``/sdapi/v1`` routes) goes
through :func:`prepare_job`, so a job is held to the same rules whichever door it came in by."""

from __future__ import annotations

from sdfleet.api.deps import AppContext
from sdfleet.config import Limits
from sdfleet.domain import JobKind
from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.inputs import store_inputs, store_training_inputs
from sdfleet.jobs.models import resolve_training
from sdfleet.jobs.netguard import check_url_syntax
from sdfleet.jobs.service import JobRequest
from sdfleet.training.config import LoraTrainSpec
from sdfleet.wire import JobCreate


def check_training_limits(spec: LoraTrainSpec, limits: Limits, prefix: str) -> None:
    """This deployment's bounds on a training job (stricter than the trainer's own): 422 naming the field."""
    checks: list[tuple[str, int, int]] = [
        ("steps", spec.steps, limits.max_train_steps),
        ("resolution", spec.resolution, limits.max_train_resolution),
        ("images", len(spec.images), limits.max_train_images),
        ("class_images", len(spec.class_images), limits.max_train_images),
        ("rank", spec.rank, limits.max_train_rank),
        ("batch_size", spec.batch_size, limits.max_train_batch_size),
    ]
    for name, value, limit in checks:
        if value > limit:
            raise LimitExceeded(f"{name} is {value}, the limit is {limit}", field=f"{prefix}{name}")
    for name in ("instance_prompt", "class_prompt"):
        text = getattr(spec, name) or ""
        if len(text) > limits.max_prompt_chars:
            raise LimitExceeded(
                f"{name} has {len(text)} characters, the limit is {limits.max_prompt_chars}",
                field=f"{prefix}{name}",
            )


async def prepare_training_job(
    ctx: AppContext, tenant: str, body: JobCreate, spec: LoraTrainSpec, prefix: str, params: str
) -> JobRequest:
    """A ``train_lora`` job: limits, the base checkpoint and the LoRA's name in the registry, the
    training images stored as inputs."""
    check_training_limits(spec, ctx.settings.limits, params)
    arch = await resolve_training(ctx.store, spec.base_model, spec.name, params)
    if body.arch and arch and body.arch != arch:
        raise ValidationError(
            f"arch {body.arch} does not match the base model's ({arch})", field=f"{prefix}arch"
        )
    if spec.name is None:
        raise ValidationError("a training job needs the name of the LoRA it makes", field=f"{params}name")
    stored = await store_training_inputs(
        spec, tenant, ctx.blobs, ctx.settings.limits.max_train_image_bytes, params
    )
    return JobRequest(
        kind=body.kind,
        spec=stored,
        priority=body.priority,
        idempotency_key=body.idempotency_key,
        webhook_url=body.webhook_url,
        labels=body.labels,
        arch=body.arch or arch,
    )


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
    if body.webhook_url:
        check_url_syntax(body.webhook_url, f"{prefix}webhook_url")
    if isinstance(body.params, LoraTrainSpec):
        request = await prepare_training_job(ctx, tenant, body, body.params, prefix, params)
        request.idempotency_key = request.idempotency_key or idempotency_key
        return request
    gen = body.generation
    try:
        gen.check_limits(ctx.settings.limits)
    except ValidationError as exc:
        exc.field = f"{params}{exc.field}" if exc.field else exc.field
        raise
    if body.kind == JobKind.IMG2IMG and not gen.init_images:
        raise ValidationError("img2img needs at least one image in init_images", field=f"{params}init_images")
    if body.kind == JobKind.TXT2IMG and (gen.init_images or gen.mask):
        raise ValidationError(
            "txt2img takes no init_images or mask: use kind img2img", field=f"{params}init_images"
        )
    use = await ctx.models.resolve(gen, params)
    if body.arch and use.arch and body.arch != use.arch:
        raise ValidationError(
            f"arch {body.arch} does not match the checkpoint's ({use.arch})", field=f"{prefix}arch"
        )
    spec = await store_inputs(gen, tenant, ctx.blobs, ctx.settings.limits.max_upload_bytes, params)
    return JobRequest(
        kind=body.kind,
        spec=spec,
        priority=body.priority,
        idempotency_key=body.idempotency_key or idempotency_key,
        webhook_url=body.webhook_url,
        labels=body.labels,
        arch=body.arch or use.arch,
    )
