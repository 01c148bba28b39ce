"""What every route needs: the services of this app instance and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sdfleet.api.auth import principal_for, require_scope
from sdfleet.blobs import BlobStore, UrlSigner
from sdfleet.config import Settings
from sdfleet.jobs.a1111 import A1111Service
from sdfleet.jobs.keys import KeyService, Principal
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.queries import JobQueries
from sdfleet.jobs.registry import ModelService
from sdfleet.jobs.service import JobService
from sdfleet.jobs.submit import JobPreparer


@dataclass(slots=True)
class AppContext:
    """The composed services of one app instance (kept on ``app.state.ctx``). Routes reach the job store
    only through these services (``jobs``, ``queries``, ``preparer``, ``a1111``, ``keys``, ``models``)."""

    settings: Settings
    blobs: BlobStore
    jobs: JobService
    queries: JobQueries
    preparer: JobPreparer
    a1111: A1111Service
    keys: KeyService
    models: ModelService
    notifier: Notifier
    metrics: Metrics
    signer: UrlSigner
    open_mode: bool

    def absolute(self, request: Request, url: str) -> str:
        """Make an orchestrator-relative URL absolute for a client."""
        if url.startswith(("http://", "https://")):
            return url
        base = (
            self.settings.public_url.rstrip("/")
            if self.settings.public_url
            else str(request.base_url).rstrip("/")
        )
        return base + url


async def get_ctx(request: Request) -> AppContext:  # async: no thread-pool hop per request
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


async def _principal(request: Request, ctx: Ctx) -> Principal:
    return await principal_for(request, ctx.keys, ctx.open_mode)


async def user_principal(request: Request, ctx: Ctx) -> Principal:
    return require_scope(await _principal(request, ctx), "user")


async def admin_principal(request: Request, ctx: Ctx) -> Principal:
    return require_scope(await _principal(request, ctx), "admin")


async def worker_principal(request: Request, ctx: Ctx) -> Principal:
    return require_scope(await _principal(request, ctx), "worker")


User = Annotated[Principal, Depends(user_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]
WorkerAuth = Annotated[Principal, Depends(worker_principal)]
