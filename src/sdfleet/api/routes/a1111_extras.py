"""A1111's Extras tab over HTTP: ``POST /sdapi/v1/extra-single-image`` and ``/sdapi/v1/extra-batch-images``.

Each image is an ``upscale`` job (:mod:`sdfleet.specs.upscale`); a batch is one ``upscale_batch`` parent job
(:mod:`sdfleet.jobs.fanout`) whose children — one ``upscale`` job per image — run on as many workers as are
free, and the call answers when the parent is done.
Bad input — an unknown upscaler, an image that does not decode, a result over ``max_upscale_pixels`` — is a
422 naming the field before anything is stored."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from sdfleet.a1111.extras import (
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    extras_html_info,
    extras_specs,
)
from sdfleet.api.deps import AppContext, Ctx
from sdfleet.api.routes.a1111 import A1111Route, Caller, a1111_caller
from sdfleet.api.routes.waiting import CLIENT_GONE_STATUS, raise_failure, wait_for_jobs
from sdfleet.domain import Job, JobKind
from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.types import JobRequest
from sdfleet.specs.upscale import UpscaleBatchSpec, UpscaleSpec
from sdfleet.wire import JobCreate

log = logging.getLogger("sdfleet.a1111")

router = APIRouter(tags=["a1111"], route_class=A1111Route, dependencies=[Depends(a1111_caller)])


@router.post("/sdapi/v1/extra-single-image", response_model=ExtrasSingleImageResponse)
async def extra_single_image(
    body: ExtrasSingleImageRequest, request: Request, ctx: Ctx, caller: Caller
) -> dict[str, Any] | Response:
    """Upscale one image (and restore its faces), as a job on a worker; answers when it is done."""
    specs = extras_specs(body, [body.image], field="image")
    answer = await _run(ctx, request, caller.tenant, specs, ["image"], [""])
    if isinstance(answer, Response):
        return answer
    images, html_info = answer
    return {"html_info": html_info, "image": images[0] if body.show_extras_results else None}


@router.post("/sdapi/v1/extra-batch-images", response_model=ExtrasBatchImagesResponse)
async def extra_batch_images(
    body: ExtrasBatchImagesRequest, request: Request, ctx: Ctx, caller: Caller
) -> dict[str, Any] | Response:
    """Upscale several images: one ``upscale_batch`` parent job whose ``upscale`` children (one per image)
    spread over the free workers; answers when the parent is done."""
    limit = ctx.settings.limits.max_images_per_job
    if len(body.imageList) > limit:
        raise LimitExceeded(
            f"imageList has {len(body.imageList)} images, the limit is {limit}", field="imageList"
        )
    specs = extras_specs(body, [i.data for i in body.imageList], field="imageList")
    tenant = caller.tenant
    inputs = ctx.preparer.inputs(tenant)
    job = JobCreate(
        kind=JobKind.UPSCALE_BATCH, params=UpscaleBatchSpec(images=specs), labels={"api": "a1111"}
    )
    try:
        prepared = await ctx.preparer.prepare(tenant, job, params_prefix="", inputs=inputs)
    except ValidationError as exc:  # LimitExceeded included: images.N.x is A1111's imageList.N.data / .x
        if exc.field and (found := _BATCH_FIELD.match(exc.field)):
            index, name = found.groups()
            exc.field = f"imageList.{index}.data" if name == "image" else name
            if name == "image":
                exc.message = f"Invalid encoded image ({exc.field}): {exc.message}"
        raise
    await inputs.store()
    [submitted] = await ctx.jobs.submit(tenant, [prepared])
    parent = submitted.job
    log.info("a1111.extras_batch_submitted job_id=%s images=%d tenant=%s", parent.id, len(specs), tenant)
    done = await wait_for_jobs(ctx, request, [parent.id], tenant)
    if done is None:
        return Response(status_code=CLIENT_GONE_STATUS)
    [finished] = done
    _raise_failure(finished)
    outputs = sorted(await ctx.queries.outputs(finished.id), key=lambda o: o.index)
    images = [base64.b64encode(await ctx.blobs.get(o.blob_key)).decode() for o in outputs]
    info = finished.result.get("info") if isinstance(finished.result.get("info"), dict) else {}
    checked = UpscaleBatchSpec.model_validate(finished.spec).images
    html_info = "".join(
        extras_html_info(
            spec,
            [str(v) for k, v in sorted((info or {}).items()) if k.startswith(f"{index}.note")],
            item.name,
        )
        for index, (spec, item) in enumerate(zip(checked, body.imageList, strict=True))
    )
    return {"html_info": html_info, "images": images if body.show_extras_results else []}


_BATCH_FIELD = re.compile(r"^images\.(\d+)\.(.+)$")


async def _prepare(
    ctx: AppContext, tenant: str, specs: list[UpscaleSpec], fields: list[str]
) -> list[JobRequest]:
    inputs = ctx.preparer.inputs(tenant)
    prepared = []
    for spec, field in zip(specs, fields, strict=True):
        body = JobCreate(kind=JobKind.UPSCALE, params=spec, labels={"api": "a1111"})
        try:
            prepared.append(await ctx.preparer.prepare(tenant, body, params_prefix="", inputs=inputs))
        except ValidationError as exc:  # LimitExceeded included; "image" is the field A1111 calls ``field``
            if exc.field == "image":
                exc.field = field
                exc.message = f"Invalid encoded image ({field}): {exc.message}"
            raise
    await inputs.store()
    return prepared


async def _run(
    ctx: AppContext,
    request: Request,
    tenant: str,
    specs: list[UpscaleSpec],
    fields: list[str],
    names: list[str],
) -> tuple[list[str], str] | Response:
    prepared = await _prepare(ctx, tenant, specs, fields)
    submitted = await ctx.jobs.submit(tenant, prepared)
    ids = [s.job.id for s in submitted]
    log.info(
        "a1111.extras_submitted job_id=%s jobs=%d tenant=%s upscaler=%s",
        ids[0],
        len(ids),
        tenant,
        specs[0].upscaler_1,
    )
    done = await wait_for_jobs(ctx, request, ids, tenant)
    if done is None:
        return Response(status_code=CLIENT_GONE_STATUS)
    images: list[str] = []
    infos: list[str] = []
    for job, name in zip(done, names, strict=True):
        _raise_failure(job)
        outputs = await ctx.queries.outputs(job.id)
        for output in sorted(outputs, key=lambda o: o.index):
            images.append(base64.b64encode(await ctx.blobs.get(output.blob_key)).decode())
        info = job.result.get("info") if isinstance(job.result.get("info"), dict) else {}
        notes = [str(v) for k, v in sorted((info or {}).items()) if k.startswith("note")]
        infos.append(extras_html_info(UpscaleSpec.model_validate(job.spec), notes, name))
    return images, "".join(infos)


def _raise_failure(job: Job) -> None:
    raise_failure(job, "a1111.extras", input_field="image")
