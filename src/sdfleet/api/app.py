"""The orchestrator's ASGI app: ``create_app(settings)`` composes store, blobs and services and
mounts every router. The app is stateless — all state is in the job store and the blob store —
so any number of replicas can serve behind a load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from sdfleet import __version__
from sdfleet.api.auth import auth_is_open
from sdfleet.api.deps import AppContext
from sdfleet.api.errors import BodyLimitMiddleware, install_error_handlers
from sdfleet.api.guard import RequestGuardMiddleware
from sdfleet.api.ratelimit import AddressRateLimitMiddleware
from sdfleet.api.routes import (
    a1111,
    a1111_controlnet,
    a1111_extras,
    admin,
    fleet,
    jobs,
    models,
    system,
    ui,
    worker,
    worker_models,
)
from sdfleet.blobs import BlobStore, UrlSigner, open_blob_store
from sdfleet.config import Settings
from sdfleet.domain import JobState, WorkerState
from sdfleet.errors import ConfigError, SdfleetError
from sdfleet.jobs.a1111 import A1111Service
from sdfleet.jobs.keys import KeyService
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.jobs.queries import JobQueries
from sdfleet.jobs.registry import ModelService
from sdfleet.jobs.service import JobService
from sdfleet.jobs.submit import JobPreparer
from sdfleet.jobs.webhooks import WebhookDispatcher
from sdfleet.store import SqlStore
from sdfleet.store.migrate import ensure_schema
from sdfleet.store.pgnotify import PgBroadcast

log = logging.getLogger("sdfleet.api")


def load_secret(settings: Settings) -> bytes:
    """The HMAC key for signed blob URLs: from settings, else kept in the data directory."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


async def _every(interval: float, fn: Callable[[], object], name: str) -> None:
    while True:
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        except SdfleetError as exc:
            log.warning("%s.error error=%s", name, exc)
        except Exception:
            log.exception("%s.crashed", name)
        await asyncio.sleep(interval)


def create_app(
    settings: Settings,
    *,
    store: SqlStore | None = None,
    blobs: BlobStore | None = None,
    clock: Callable[[], float] = time.time,
    background: bool = True,
) -> FastAPI:
    """Build the orchestrator app. ``store``/``blobs`` may be injected (tests); otherwise they are
    opened from ``settings.database_url`` / ``settings.blob_url`` when the app starts."""
    open_mode = auth_is_open(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store or SqlStore(settings.resolved_database_url(), pool_size=settings.database_pool_size)
        await ensure_schema(the_store, migrate=settings.auto_migrate)
        signer = UrlSigner(load_secret(settings))
        the_blobs = blobs or open_blob_store(settings.resolved_blob_url(), signer)
        notifier = Notifier()
        broadcast: PgBroadcast | None = None
        if not the_store.dialect.is_sqlite:
            broadcast = PgBroadcast(the_store.dialect.sync_url, notifier.remote)
            await broadcast.start()
            notifier.broadcast = broadcast
        metrics = Metrics()
        keys = KeyService(the_store, clock)
        if not settings.binds_loopback() and not settings.a1111_api_auth and not await keys.has_user_keys():
            raise ConfigError(
                f"refusing to serve on {settings.host} without API keys: create one with "
                "`sdfleet keys create --scope admin`, or bind 127.0.0.1",
                field="auth",
            )
        service = JobService(
            the_store, settings, clock=clock, notifier=notifier, metrics=metrics, blobs=the_blobs
        )
        registry = ModelService(the_store, allow_pickle=settings.allow_pickle, clock=clock)
        ctx = AppContext(
            settings=settings,
            blobs=the_blobs,
            jobs=service,
            queries=JobQueries(the_store),
            preparer=JobPreparer(settings, the_store, the_blobs, registry),
            a1111=A1111Service(
                the_store, clock=service.clock, retention_seconds=settings.event_retention_seconds
            ),
            keys=keys,
            models=registry,
            notifier=notifier,
            metrics=metrics,
            signer=signer,
            open_mode=open_mode,
        )
        app.state.ctx = ctx
        app.state.store = the_store  # for tests and operators' tools: routes reach it through services only
        dispatcher = WebhookDispatcher(the_store, settings, metrics=metrics, notifier=notifier, clock=clock)
        tasks: list[asyncio.Task[None]] = []
        if background:
            tasks = [
                asyncio.create_task(_every(settings.reaper_interval, service.reap, "reaper")),
                asyncio.create_task(_every(5.0, lambda: _refresh_gauges(ctx), "gauges")),
                asyncio.create_task(_every(3600.0, service.prune, "prune")),
                asyncio.create_task(dispatcher.run()),
            ]
        log.info(
            "orchestrator.started version=%s database=%s blobs=%s auth=%s",
            __version__,
            the_store.dialect.name,
            the_blobs.url,
            "keys" if not open_mode else "keys" if await keys.has_user_keys() else "open",
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await dispatcher.close()
            if broadcast is not None:
                await broadcast.close()
            await the_blobs.close()
            if own_store:
                await the_store.close()

    app = FastAPI(
        title="sdfleet",
        version=__version__,
        lifespan=lifespan,
        description="Stable Diffusion generation and LoRA training as a service.",
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes, exempt=("/v1/worker/blobs/",)
    )
    app.add_middleware(RequestGuardMiddleware, settings=settings)  # Host check, no cross-site writes
    app.add_middleware(AddressRateLimitMiddleware, limit=settings.ip_limit)  # outermost: floods stop first
    for router in (
        jobs.router,
        worker.router,
        worker_models.router,
        models.router,
        admin.router,
        fleet.router,
        system.router,
        ui.router,
        a1111.router,
        a1111_extras.router,
        a1111_controlnet.router,
    ):
        app.include_router(router)
    return app


async def _refresh_gauges(ctx: AppContext) -> None:
    now = time.time()
    since = now - ctx.settings.worker_offline_after
    stats = await ctx.queries.stats(seen_since=since)
    for state in JobState:
        ctx.metrics.jobs_by_state.labels(state.value).set(stats.by_state.get(state.value, 0))
    for wstate in WorkerState:
        ctx.metrics.workers_online.labels(wstate.value).set(
            sum(1 for w in stats.workers if w.state == wstate)
        )
