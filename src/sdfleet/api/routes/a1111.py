"""The AUTOMATIC1111-compatible API: ``/sdapi/v1/*`` and ``/internal/*``, so existing A1111 clients work
unchanged — and get more than A1111 gives them.

Each txt2img/img2img request becomes a job (labelled ``api=a1111`` and ``task_id=…``) and the call waits for
it, so requests from many clients run in parallel across the fleet instead of one at a time behind a global
lock. Model, VAE and clip skip are per request (``override_settings``) or per tenant (``/options``), never a
global switch. ``/progress``, ``/interrupt`` and ``/skip`` act on the caller's own request; ``force_task_id``
with ``/internal/progress`` follows one request exactly.

Authentication: an API key (``Authorization: Bearer``/``X-API-Key``) as everywhere, or HTTP Basic users from
``Settings.a1111_api_auth`` (A1111's ``--api-auth user:pass[,user2:pass2]``), each its own tenant
``a1111-<user>``; when Basic users are configured, every route here needs credentials (and so does the native
``/v1`` API: Basic users are tenants, so open mode ends). Open mode (loopback, no keys) is unchanged otherwise. Errors use A1111's envelope (see :mod:`sdfleet.api.errors`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from PIL import Image

from sdfleet import __version__
from sdfleet.a1111 import SAMPLERS, SCHEDULERS, parse_infotext
from sdfleet.a1111.api import (
    EmbeddingItem,
    EmbeddingsResponse,
    ExtensionItem,
    FaceRestorerItem,
    HypernetworkItem,
    ImageToImageResponse,
    Img2ImgRequest,
    InternalProgressRequest,
    InternalProgressResponse,
    LatentUpscaleModeItem,
    LoraItem,
    MemoryResponse,
    PNGInfoRequest,
    PNGInfoResponse,
    ProcessingRequest,
    ProgressResponse,
    ProgressState,
    PromptStyleItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptArg,
    ScriptInfo,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    TextToImageResponse,
    Txt2ImgRequest,
    UpscalerItem,
)
from sdfleet.a1111.catalog import Catalog, checkpoint_title, model_name_of
from sdfleet.a1111.controlnet import SCRIPT_NAMES as CONTROLNET_SCRIPTS
from sdfleet.a1111.info import MappedRequest, OutputRecord, build_info
from sdfleet.a1111.mapping import (
    BUILTIN_SCRIPTS,
    LATENT_UPSCALE_MODES,
    PIXEL_UPSCALERS,
    check_request_sizes,
    map_request,
)
from sdfleet.a1111.options import effective_options, validate_option_updates
from sdfleet.a1111.scripts import selectable_scripts
from sdfleet.api.auth import OPEN_PRINCIPAL, anonymous_allowed, principal_for, require_scope
from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import AppContext, Ctx
from sdfleet.api.routes.a1111_scripts import SCRIPT_REQUEST_LABEL, run_script
from sdfleet.api.routes.waiting import CLIENT_GONE_STATUS, wait_for_jobs
from sdfleet.api.views import is_detected_map
from sdfleet.config import Limits, parse_basic_users
from sdfleet.domain import Job, JobKind, JobState, ModelKind, ModelRecord
from sdfleet.errors import (
    AuthError,
    EngineError,
    LimitExceeded,
    ServiceUnavailable,
    ValidationError,
)
from sdfleet.jobs.inputs import ImageLimits, decode_image
from sdfleet.jobs.keys import Principal
from sdfleet.jobs.registry import may_see_provenance
from sdfleet.specs.upscale import A1111_NAMES
from sdfleet.wire import EXIF_IFD, EXIF_USER_COMMENT, JobCreate

log = logging.getLogger("sdfleet.a1111")

_RNG = random.SystemRandom()
_BASIC_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_IGNORED_INFO_KEYS = frozenset(
    {
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
    }
)


# ===================================================================== authentication


@functools.lru_cache(maxsize=8)
def _basic_users(spec: str) -> dict[str, str]:
    return parse_basic_users(spec)


def basic_tenant(user: str) -> str:
    """The tenant an A1111 Basic user acts as: ``a1111-<user>`` (a hash when the name has other characters)."""
    if _BASIC_TENANT.match(user):
        return f"a1111-{user}"
    return f"a1111-{hashlib.sha256(user.encode()).hexdigest()[:16]}"


def _check_basic(value: str, users: dict[str, str]) -> str:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError("Incorrect username or password") from exc
    user, _, password = decoded.partition(":")
    expected = users.get(user)
    # compare even for unknown users, so the answer takes as long either way
    ok = secrets.compare_digest(password.encode(), (expected or secrets.token_hex(16)).encode())
    if expected is None or not ok:
        raise AuthError("Incorrect username or password")
    return user


async def a1111_caller(request: Request, ctx: Ctx) -> Principal:
    """Who calls an A1111 route: a Basic user from ``a1111_api_auth``, or an API key (scope ``user``).

    With Basic users configured every A1111 route needs credentials; without, a Basic header is ignored in
    open mode (as A1111 ignores it without ``--api-auth``) and refused otherwise.
    """
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    users = _basic_users(ctx.settings.a1111_api_auth) if ctx.settings.a1111_api_auth else {}
    if scheme.lower() == "basic":
        if users:
            return Principal(tenant=basic_tenant(_check_basic(value, users)), scopes=frozenset({"user"}))
        if await anonymous_allowed(ctx.keys, ctx.open_mode):
            return OPEN_PRINCIPAL
        raise AuthError(
            "this server has no A1111 Basic users (a1111_api_auth): send 'Authorization: Bearer <api key>'"
        )
    if users and not header and not request.headers.get("x-api-key"):
        raise AuthError("Not authenticated")
    return require_scope(await principal_for(request, ctx.keys, ctx.open_mode), "user")


Caller = Annotated[Principal, Depends(a1111_caller)]


class A1111Route(CheckedRoute):
    """A route that checks its request at the edge (:class:`~sdfleet.api.checked.CheckedRoute`) and adds
    A1111's ``X-Process-Time`` header (seconds spent, 4 decimals)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def timed(request: Request) -> Response:
            started = time.perf_counter()
            response = await handler(request)
            response.headers["X-Process-Time"] = str(round(time.perf_counter() - started, 4))
            return response

        return timed


router = APIRouter(tags=["a1111"], route_class=A1111Route, dependencies=[Depends(a1111_caller)])


# ===================================================================== txt2img / img2img


@router.post("/sdapi/v1/txt2img", response_model=TextToImageResponse)
async def txt2img(
    body: Txt2ImgRequest, request: Request, ctx: Ctx, caller: Caller
) -> dict[str, Any] | Response:
    """Text to image: the request runs as a job on a worker; the call answers when the job is done."""
    return await _generate(JobKind.TXT2IMG, body, request, ctx, caller.tenant)


@router.post("/sdapi/v1/img2img", response_model=ImageToImageResponse)
async def img2img(
    body: Img2ImgRequest, request: Request, ctx: Ctx, caller: Caller
) -> dict[str, Any] | Response:
    """Image to image and inpainting (``init_images``, ``mask``), as a job like txt2img."""
    return await _generate(JobKind.IMG2IMG, body, request, ctx, caller.tenant)


async def _catalog(ctx: AppContext) -> Catalog:
    return await ctx.a1111.catalog()


async def _generate(
    kind: JobKind, body: ProcessingRequest, request: Request, ctx: AppContext, tenant: str
) -> dict[str, Any] | Response:
    check_request_sizes(body, ctx.settings.limits)
    options = await ctx.a1111.options(tenant)
    catalog = await _catalog(ctx)
    if body.script_name:  # a selectable script: a batch of jobs (a1111_scripts)
        return await run_script(kind, body, request, ctx, tenant, options=options, catalog=catalog)
    mapped = map_request(kind, body, options=options, catalog=catalog, rng=_RNG)
    labels = {"api": "a1111", "task_id": mapped.task_id}
    try:
        prepared = await ctx.preparer.prepare(
            tenant, JobCreate(kind=kind, params=mapped.spec, labels=labels), params_prefix=""
        )
    except LimitExceeded as exc:
        if exc.field and exc.field.startswith(("init_images.", "mask")):  # the message names the image
            raise LimitExceeded(f"{exc.field}: {exc.message}", field=exc.field) from exc
        raise
    except ValidationError as exc:
        if exc.field and exc.field.startswith(("init_images.", "mask")):  # A1111's words for a bad image
            raise ValidationError(
                f"Invalid encoded image ({exc.field}): {exc.message}", field=exc.field
            ) from exc
        raise
    [submitted] = await ctx.jobs.submit(tenant, [prepared])
    job = submitted.job
    await ctx.a1111.record_task(tenant, mapped.task_id, job.id)
    log.info(
        "a1111.submitted job_id=%s task_id=%s tenant=%s kind=%s model=%s images=%d notes=%d",
        job.id,
        mapped.task_id,
        tenant,
        kind.value,
        mapped.spec.model,
        mapped.spec.images_per_job,
        len(mapped.notes),
    )
    log.debug("a1111.prompt job_id=%s prompt=%r negative=%r", job.id, mapped.prompt, mapped.negative_prompt)
    if not mapped.restore_afterwards and mapped.override_settings:
        kept, _ = validate_option_updates(mapped.override_settings, catalog, strict_checkpoint=False)
        if kept:
            await ctx.a1111.merge_options(tenant, kept)
    try:
        done = await wait_for_jobs(ctx, request, [job.id], tenant)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(ctx.a1111.finish_task(tenant, mapped.task_id, job.id))
    if done is None:
        return Response(status_code=CLIENT_GONE_STATUS)
    return await _answer(ctx, mapped, done[0], catalog)


async def _answer(ctx: AppContext, mapped: MappedRequest, job: Job, catalog: Catalog) -> dict[str, Any]:
    if job.state == JobState.FAILED:
        message = job.error_message or "the job failed"
        log.warning("a1111.failed job_id=%s code=%s", job.id, job.error_code)
        if job.error_code == "expired":
            raise ServiceUnavailable(message)
        raise EngineError(message, retryable=False)
    outputs = sorted(await ctx.queries.outputs(job.id), key=lambda o: o.index)
    images: list[str] = []
    if mapped.send_images:
        for output in outputs:
            images.append(base64.b64encode(await ctx.blobs.get(output.blob_key)).decode())
    interrupted = job.state == JobState.CANCELED
    pictures = [o for o in outputs if not is_detected_map(job, o)]  # the detected maps carry no seed
    info = build_info(
        mapped,
        [OutputRecord(seed=o.seed, infotext=o.infotext) for o in pictures],
        job_timestamp=_timestamp(job.created_at),
        version=f"sdfleet {__version__}",
        model=catalog.checkpoint(mapped.spec.model) if mapped.spec.model else None,
        vae=catalog.vae(mapped.spec.vae) if mapped.spec.vae else None,
        extra={
            "job_id": job.id,
            "interrupted": interrupted,
            "engine_seconds": round(job.engine_seconds, 4),
            "cost_usd": round(job.cost_usd, 8),
        },
    )
    log.info(
        "a1111.answered job_id=%s state=%s images=%d engine_seconds=%.3f",
        job.id,
        job.state.value,
        len(outputs),
        job.engine_seconds,
    )
    return {
        "images": images,
        "parameters": mapped.parameters,
        "info": json.dumps(info, default=lambda _: None),
    }


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y%m%d%H%M%S")


# ===================================================================== progress, interrupt, skip


def _current(active: list[tuple[str, Job]]) -> tuple[str, Job] | None:
    """The request /progress describes: the running one that started first, else the oldest queued one."""
    running = [item for item in active if item[1].state == JobState.RUNNING]
    if running:
        return min(running, key=lambda item: item[1].started_at or 0.0)
    return active[0] if active else None


@router.get("/sdapi/v1/progress", response_model=ProgressResponse)
async def progress(ctx: Ctx, caller: Caller, skip_current_image: bool = False) -> ProgressResponse:
    """Progress of the caller's own current request (idle values when it has none running or queued).

    ``current_image`` stays null: workers send no live previews."""
    active = await ctx.a1111.active_tasks(caller.tenant)
    current = _current(active)
    if current is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState())
    task_id, job = current
    n_iter = max(1, int(job.spec.get("n_iter", 1)))
    state = ProgressState(
        interrupted=job.cancel_requested,
        job=f"scripts_{job.kind.value}",
        job_count=n_iter,
        job_timestamp=_timestamp(job.created_at),
        sampling_steps=int(job.spec.get("steps", 0)),
    )
    if job.state != JobState.RUNNING or not job.progress_total:
        return ProgressResponse(
            progress=0.0,
            eta_relative=0.0,
            state=state,
            textinfo=job.wait_reason or ("Queued..." if job.state == JobState.QUEUED else None),
            current_task=task_id,
        )
    total, step = job.progress_total, min(job.progress_step, job.progress_total)
    per_iteration = max(1, total // n_iter)
    state.job_no = min(step // per_iteration, n_iter - 1)
    state.sampling_step = step - state.job_no * per_iteration
    state.sampling_steps = per_iteration
    fraction = min(1.0, 0.01 + step / total)
    elapsed = max(0.0, ctx.jobs.clock() - (job.started_at or job.created_at))
    return ProgressResponse(
        progress=fraction,
        eta_relative=elapsed / fraction - elapsed,
        state=state,
        current_task=task_id,
    )


async def _stop_running(ctx: AppContext, tenant: str, how: str) -> int:
    active = await ctx.a1111.active_tasks(tenant)
    running = [job for _, job in active if job.state == JobState.RUNNING]
    # a script's request is a batch of jobs: stopping it stops its queued jobs too
    scripts = {job.labels[SCRIPT_REQUEST_LABEL] for job in running if SCRIPT_REQUEST_LABEL in job.labels}
    running += [
        job
        for _, job in active
        if job.state == JobState.QUEUED and job.labels.get(SCRIPT_REQUEST_LABEL) in scripts
    ]
    for job in running:
        await ctx.jobs.cancel(job.id, tenant)
    log.info("a1111.%s tenant=%s jobs=%d", how, tenant, len(running))
    return len(running)


@router.post("/sdapi/v1/interrupt")
async def interrupt(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """Stop the caller's running request(s) at the next step; their calls answer with no images."""
    await _stop_running(ctx, caller.tenant, "interrupt")
    return {}


@router.post("/sdapi/v1/skip")
async def skip(ctx: Ctx, caller: Caller) -> None:
    """A1111 skips the current batch of a request; a job here is one unit, so this stops it like
    ``/interrupt`` does."""
    await _stop_running(ctx, caller.tenant, "skip")


@router.post("/internal/progress", response_model=InternalProgressResponse)
async def internal_progress(
    body: InternalProgressRequest, ctx: Ctx, caller: Caller
) -> InternalProgressResponse:
    """Progress of one request by its task id (``force_task_id``), for the caller's own requests only."""
    job = None
    if body.id_task:
        task = body.id_task
        job = await ctx.a1111.task_job(caller.tenant, task)
    if job is None:
        return InternalProgressResponse(
            active=False, queued=False, completed=False, id_live_preview=-1, textinfo="Waiting..."
        )
    if job.state != JobState.RUNNING:
        queued = job.state == JobState.QUEUED
        return InternalProgressResponse(
            active=False,
            queued=queued,
            completed=job.state.terminal,
            id_live_preview=-1,
            textinfo=(job.wait_reason or "Queued...") if queued else "Waiting...",
        )
    total, step = job.progress_total, min(job.progress_step, job.progress_total)
    fraction = step / total if total else 0.0
    elapsed = max(0.0, ctx.jobs.clock() - (job.started_at or job.created_at))
    eta = elapsed / fraction - elapsed if fraction > 0 else None
    return InternalProgressResponse(
        active=True,
        queued=False,
        completed=False,
        progress=fraction,
        eta=eta,
        id_live_preview=body.id_live_preview,
        textinfo=f"Step {step}/{total}" if total else None,
    )


@router.get("/internal/ping")
async def ping(_: Caller) -> dict[str, Any]:
    """A1111's liveness probe."""
    return {}


# ===================================================================== png-info


@router.post("/sdapi/v1/png-info", response_model=PNGInfoResponse)
async def png_info(body: PNGInfoRequest, ctx: Ctx, _: Caller) -> PNGInfoResponse:
    """The infotext in an image (PNG ``parameters`` chunk, or EXIF UserComment of JPEG/WebP), its other
    metadata, and the infotext parsed as A1111 parses it."""
    geninfo, items = await asyncio.to_thread(_read_image_info, body.image, ctx.settings.limits)
    return PNGInfoResponse(info=geninfo, items=items, parameters=dict(parse_infotext(geninfo)))


def _read_image_info(value: str, limits: Limits) -> tuple[str, dict[str, Any]]:
    try:
        data = decode_image(value, "image", ImageLimits.generation(limits)).data  # checked and fully decoded
    except LimitExceeded:
        raise
    except ValidationError as exc:
        raise ValidationError(f"Invalid encoded image: {exc.message}", field="image") from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            info = dict(image.info or {})
            exif = image.getexif().get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT) if "exif" in info else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValidationError("Invalid encoded image: it does not decode", field="image") from exc
    geninfo = info.pop("parameters", None)
    comment = _user_comment(exif)
    if comment:
        geninfo = comment
    items = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in info.items()
        if isinstance(key, str)
        and key not in _IGNORED_INFO_KEYS
        and isinstance(value, str | int | float | bool | tuple)
    }
    return (geninfo if isinstance(geninfo, str) else ""), items


def _user_comment(raw: object) -> str | None:
    """An EXIF UserComment as piexif's helper reads it (UNICODE is UTF-16, big-endian as A1111 writes it)."""
    if not isinstance(raw, bytes) or not raw:
        return raw if isinstance(raw, str) and raw else None
    prefix, payload = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        return payload.decode("utf-16-be", errors="ignore")
    if prefix == b"ASCII\x00\x00\x00":
        return payload.decode("ascii", errors="ignore")
    return raw.decode("utf-8", errors="ignore")


# ===================================================================== options


@router.get("/sdapi/v1/options")
async def get_options(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """The caller's A1111 settings: A1111's defaults overlaid with what this tenant set."""
    stored = await ctx.a1111.options(caller.tenant)
    options = effective_options(stored)
    title = options.get("sd_model_checkpoint")
    if title:
        found = (await _catalog(ctx)).checkpoint(str(title))
        options["sd_checkpoint_hash"] = found.sha256 if found and found.sha256 else ""
    return options


@router.post("/sdapi/v1/options")
async def set_options(body: dict[str, Any], ctx: Ctx, caller: Caller) -> None:
    """Set some of the caller's settings: defaults for the caller's later requests, seen by every replica,
    never anyone else's. Unknown settings and A1111's ``restrict_api`` ones are ignored."""
    accepted, ignored = validate_option_updates(body, await _catalog(ctx))
    if accepted:
        await ctx.a1111.merge_options(caller.tenant, accepted)
    log.info("a1111.options tenant=%s set=%s ignored=%s", caller.tenant, sorted(accepted), sorted(ignored))


@router.get("/sdapi/v1/cmd-flags")
async def cmd_flags(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The A1111 command-line flags clients look at, as this server has them (no secrets)."""
    settings = ctx.settings
    return {
        "api": True,
        "nowebui": True,
        "listen": not settings.binds_loopback(),
        "server_name": settings.host,
        "port": settings.port,
        "api_auth": None,
        "api_log": False,
        "api_server_stop": False,
        "no_hashing": False,
        "disable_safe_unpickle": settings.allow_pickle,
        "ckpt_dir": None,
        "vae_dir": None,
        "lora_dir": None,
        "embeddings_dir": None,
        "skip_version_check": True,
        "timeout_keep_alive": 30,
    }


# ===================================================================== lists


@router.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
async def samplers(_: Caller) -> list[dict[str, object]]:
    """A1111 1.10's samplers, in its order."""
    return [sampler.as_api() for sampler in SAMPLERS]


@router.get("/sdapi/v1/schedulers", response_model=list[SchedulerItem])
async def schedulers(_: Caller) -> list[dict[str, object]]:
    """A1111 1.10's schedule types."""
    return [scheduler.as_api() for scheduler in SCHEDULERS]


@router.get("/sdapi/v1/upscalers")
async def upscalers(ctx: Ctx, caller: Caller) -> list[UpscalerItem]:
    """A1111's built-in resizes, then every registered upscaler model (by name: what ``upscaler_1``,
    ``upscaler_2`` and ``hr_upscaler`` take), with the factor of one pass of its net."""
    [registered] = await ctx.queries.models_of_kind(ModelKind.UPSCALER)
    return [UpscalerItem(name=name, scale=4) for name in PIXEL_UPSCALERS] + [
        UpscalerItem(
            name=m.name,
            model_name=m.arch,
            model_path=_filename(m, caller),
            model_url=None,
            scale=float(m.scale) if m.scale else None,
        )
        for m in sorted(registered, key=lambda m: m.name.lower())
    ]


@router.get("/sdapi/v1/latent-upscale-modes")
async def latent_upscale_modes(_: Caller) -> list[LatentUpscaleModeItem]:
    """The latent upscale modes of the hires fix."""
    return [LatentUpscaleModeItem(name=name) for name in LATENT_UPSCALE_MODES]


def _filename(model: ModelRecord, caller: Principal) -> str:
    """A1111's file path: the registry source for admins and the owner, else the model's name."""
    return model.source if may_see_provenance(model, caller.tenant, is_admin=caller.is_admin) else model.name


def _sd_model(model: ModelRecord, caller: Principal) -> SDModelItem:
    return SDModelItem(
        title=checkpoint_title(model),
        model_name=model_name_of(model),
        hash=model.short_hash or None,
        sha256=model.sha256,
        filename=_filename(model, caller),
        config=None,
    )


@router.get("/sdapi/v1/sd-models")
async def sd_models(ctx: Ctx, caller: Caller) -> list[SDModelItem]:
    """The registry's checkpoints, titled ``name [hash10]`` as A1111 titles them."""
    return [_sd_model(m, caller) for m in await ctx.models.list(ModelKind.CHECKPOINT)]


@router.get("/sdapi/v1/sd-vae")
async def sd_vae(ctx: Ctx, caller: Caller) -> list[SDVaeItem]:
    """The registry's VAEs."""
    return [
        SDVaeItem(model_name=m.name, filename=_filename(m, caller))
        for m in await ctx.models.list(ModelKind.VAE)
    ]


@router.get("/sdapi/v1/loras")
async def loras(ctx: Ctx, caller: Caller) -> list[LoraItem]:
    """The registry's LoRAs (use them in prompts as ``<lora:name:weight>``)."""
    return [
        LoraItem(name=m.name, alias=m.name, path=_filename(m, caller), metadata={})
        for m in await ctx.models.list(ModelKind.LORA)
    ]


@router.get("/sdapi/v1/embeddings")
async def embeddings(ctx: Ctx, _: Caller) -> EmbeddingsResponse:
    """The registry's textual-inversion embeddings (sizes unknown to the registry are null)."""
    found = await ctx.models.list(ModelKind.EMBEDDING)
    return EmbeddingsResponse(loaded={m.name: EmbeddingItem() for m in found}, skipped={})


@router.get("/sdapi/v1/hypernetworks")
async def hypernetworks(_: Caller) -> list[HypernetworkItem]:
    """Hypernetworks are not supported: always empty."""
    return []


FACE_FAMILIES = {"codeformer": "CodeFormer", "gfpgan": "GFPGAN"}


@router.get("/sdapi/v1/face-restorers")
async def face_restorers(ctx: Ctx, caller: Caller) -> list[FaceRestorerItem]:
    """The registered face restorers, by the names A1111's ``face_restoration_model`` takes (CodeFormer,
    GFPGAN; another family by its registry name). Empty: no restorer is registered, so ``restore_faces``
    and the Extras visibilities restore nothing (and say so)."""
    [registered] = await ctx.queries.models_of_kind(ModelKind.FACE_RESTORER)
    seen: dict[str, FaceRestorerItem] = {}
    for m in sorted(registered, key=lambda m: m.name.lower()):
        name = FACE_FAMILIES.get(m.arch or "", m.name)
        seen.setdefault(name, FaceRestorerItem(name=name, cmd_dir=_filename(m, caller)))
    return list(seen.values())


@router.get("/sdapi/v1/realesrgan-models")
async def realesrgan_models(ctx: Ctx, caller: Caller) -> list[RealesrganItem]:
    """The registered upscalers that are Real-ESRGAN's own models (by A1111's names: ``R-ESRGAN 4x+``…)."""
    [registered] = await ctx.queries.models_of_kind(ModelKind.UPSCALER)
    return [
        RealesrganItem(name=m.name, path=_filename(m, caller), scale=m.scale)
        for m in sorted(registered, key=lambda m: m.name.lower())
        if m.name in A1111_NAMES
    ]


@router.get("/sdapi/v1/prompt-styles")
async def prompt_styles(_: Caller) -> list[PromptStyleItem]:
    """No prompt styles are defined on this server: always empty."""
    return []


@router.post("/sdapi/v1/refresh-checkpoints")
async def refresh_checkpoints(_: Caller) -> None:
    """Nothing to rescan: the lists come from the registry on every call."""


@router.post("/sdapi/v1/refresh-vae")
async def refresh_vae(_: Caller) -> None:
    """Nothing to rescan: the lists come from the registry on every call."""


@router.post("/sdapi/v1/refresh-loras")
async def refresh_loras(_: Caller) -> None:
    """Nothing to rescan: the lists come from the registry on every call."""


@router.post("/sdapi/v1/refresh-embeddings")
async def refresh_embeddings(_: Caller) -> None:
    """Nothing to rescan: the lists come from the registry on every call."""


@router.post("/sdapi/v1/unload-checkpoint")
async def unload_checkpoint(_: Caller) -> dict[str, Any]:
    """Workers manage their own model memory; nothing to unload here."""
    return {}


@router.post("/sdapi/v1/reload-checkpoint")
async def reload_checkpoint(_: Caller) -> dict[str, Any]:
    """Workers load models when a job needs them; nothing to reload here."""
    return {}


@router.get("/sdapi/v1/scripts")
async def scripts(_: Caller) -> ScriptsList:
    """The scripts requests may name, per tab: the selectable ones this server runs (``script_name``), then
    A1111's built-in always-on ones (``alwayson_scripts``)."""
    names: dict[bool, list[str]] = {}
    for is_img2img in (False, True):
        selectable = [s.name for s in selectable_scripts(is_img2img)]
        alwayson = [s.name for s in BUILTIN_SCRIPTS if is_img2img or not s.is_img2img_only]
        names[is_img2img] = selectable + alwayson + list(CONTROLNET_SCRIPTS)
    return ScriptsList(txt2img=names[False], img2img=names[True])


@router.get("/sdapi/v1/script-info")
async def script_info(_: Caller) -> list[ScriptInfo]:
    """Every script of each tab (txt2img, then img2img) with its arguments in ``script_args`` order."""
    infos = []
    for is_img2img in (False, True):
        for selectable in selectable_scripts(is_img2img):
            args = [ScriptArg.model_validate(spec.as_api()) for spec in selectable.arg_specs(is_img2img)]
            infos.append(
                ScriptInfo(name=selectable.name, is_alwayson=False, is_img2img=is_img2img, args=args)
            )
        for script in BUILTIN_SCRIPTS:
            if script.is_img2img_only and not is_img2img:
                continue
            args = [ScriptArg.model_validate(dict(arg)) for arg in script.args]
            infos.append(ScriptInfo(name=script.name, is_alwayson=True, is_img2img=is_img2img, args=args))
        for name in CONTROLNET_SCRIPTS:  # its units are objects in args, not positional values
            infos.append(ScriptInfo(name=name, is_alwayson=True, is_img2img=is_img2img, args=[]))
    return infos


@router.get("/sdapi/v1/extensions")
async def extensions(_: Caller) -> list[ExtensionItem]:
    """No A1111 extensions: always empty."""
    return []


@router.get("/sdapi/v1/memory")
def memory(_: Caller) -> MemoryResponse:
    """This orchestrator process's memory, as A1111 reports its own; GPUs are on the workers
    (``/v1/admin/workers``)."""
    return MemoryResponse(
        ram=_ram(),
        cuda={"error": "the orchestrator has no GPU; each worker reports its own in /v1/admin/workers"},
    )


def _ram() -> dict[str, Any]:
    """A1111's numbers: ``used`` is this process's resident memory, ``free`` the rest of the machine's."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[1]) * page
    except (OSError, ValueError, IndexError) as exc:
        return {"error": str(exc)}
    return {"free": total - used, "used": used, "total": total}
