"""Registry models for workers: what a claimed job needs to fetch (sent with the claim, see
:func:`claimed_models`), and a fresh download URL when a presigned one expired
(``POST /v1/worker/models/url``). Only ``worker``-scoped keys reach the route.

``s3://bucket/key`` sources are presigned here, with the orchestrator's object-store credentials
(workers hold none); that needs the blob store on S3 (``SDFLEET_BLOB_URL=s3://…``). Every other
source goes to the worker as registered, and the worker maps it (:mod:`sdfleet.models.sources`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import AppContext, Ctx, WorkerAuth
from sdfleet.domain import ModelRecord
from sdfleet.jobs.registry import named_models
from sdfleet.wire import ModelSource, ModelUrlRequest

router = APIRouter(prefix="/v1/worker/models", tags=["worker"], route_class=CheckedRoute)
MODEL_URL_SECONDS = 6 * 3600.0


def model_source(ctx: AppContext, record: ModelRecord) -> ModelSource:
    """A registry entry as a worker needs it (``s3://`` sources presigned)."""
    url = problem = None
    parts = urlsplit(record.source)
    if parts.scheme.lower() == "blob":
        # a model in this deployment's blob store (a LoRA a training job made): a signed URL
        # (relative to the orchestrator for the local store, presigned for S3)
        url = ctx.blobs.get_url(record.source.removeprefix("blob:"), MODEL_URL_SECONDS)
    elif parts.scheme.lower() == "s3":
        presign = getattr(ctx.blobs, "presign_object", None)
        key = unquote(parts.path.lstrip("/"))
        if presign is None:
            problem = (
                "s3:// model sources are presigned by the orchestrator, which needs its blob store on S3 "
                "(SDFLEET_BLOB_URL=s3://…)"
            )
        elif not key:
            problem = f"{record.source}: no object key"
        else:
            url = presign(parts.netloc, key, MODEL_URL_SECONDS)
    return ModelSource(
        name=record.name,
        kind=record.kind.value,
        arch=record.arch,
        source=record.source,
        sha256=record.sha256,
        size=record.size,
        url=url,
        problem=problem,
    )


async def claimed_models(
    ctx: AppContext, jobs: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, list[ModelSource]]:
    """``{job id: models}`` for claimed ``(job id, params)`` pairs; one registry read for all of
    them, none when no job names a model."""
    wanted = {job_id: named_models(params) for job_id, params in jobs}
    names = sorted({n for found in wanted.values() for n in found})
    if not names:
        return {}
    records = await ctx.queries.models(names)
    sources = {name: model_source(ctx, record) for name, record in records.items()}
    return {job_id: [sources[n] for n in found if n in sources] for job_id, found in wanted.items() if found}


@router.post("/url")
async def model_url(body: ModelUrlRequest, ctx: Ctx, _: WorkerAuth) -> ModelSource:
    """A model's registry entry with a fresh download URL (for a presigned URL that expired)."""
    return model_source(ctx, await ctx.models.get(body.name))
