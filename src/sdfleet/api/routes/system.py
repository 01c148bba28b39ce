"""Health, readiness, Prometheus metrics, and signed blob downloads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sdfleet.api.auth import principal_for, require_scope
from sdfleet.api.deps import Ctx
from sdfleet.blobs import LocalBlobStore, verify_signed
from sdfleet.blobs.signing import MAX_SIGNATURE_LENGTH
from sdfleet.errors import NotFound, ServiceUnavailable

router = APIRouter(tags=["system"])
MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "safetensors": "application/octet-stream",
}


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(ctx: Ctx) -> dict[str, str]:
    """The process can serve: its database answers."""
    try:
        await ctx.queries.ping()
    except Exception as exc:
        raise ServiceUnavailable(f"database not reachable: {type(exc).__name__}") from exc
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, ctx: Ctx) -> Response:
    """Prometheus metrics: queue depth by state, claims, completions, failures, lease expiries,
    latency histograms, webhook deliveries, process CPU and memory.

    Needs an ``admin`` or ``metrics`` key as a bearer token (Prometheus: ``authorization:
    credentials_file``) unless the server is open (loopback, no keys) or ``public_metrics`` is set."""
    if not ctx.settings.public_metrics:
        require_scope(await principal_for(request, ctx.keys, ctx.open_mode), "metrics")
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/blobs/{key:path}")
async def get_blob(
    key: str,
    ctx: Ctx,
    exp: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=MAX_SIGNATURE_LENGTH)],
) -> Response:
    """Serve a blob for a signed URL (local blob store)."""
    verify_signed(ctx.signer, "GET", key, exp, sig)
    if not isinstance(ctx.blobs, LocalBlobStore):
        raise NotFound("blobs are served by the object store", field="key")
    path = ctx.blobs.path(key)
    if not path.is_file():
        raise NotFound("no such blob", field="key")
    media = MEDIA_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
    return FileResponse(
        path, media_type=media, headers={"cache-control": "private, max-age=86400, immutable"}
    )
