"""The worker's runner: registers with the orchestrator, pulls jobs, hands each to its job kind,
heartbeats, stops gracefully. It owns the control loop and the held-job table, and no job kind's
logic: each claimed job goes to the :data:`~sdfleet.worker.context.RunFactory` registered for its
kind (``Worker(kinds=…)``, default :func:`sdfleet.worker.kinds.default_kinds`), whose run sees only a
:class:`~sdfleet.worker.context.RunContext`; every held job ends through the one
:class:`~sdfleet.worker.reports.Reporter`.

Pipelined (the default), four kinds of work overlap so the engine is not idle during network I/O:

- a **claimer** task long-polls ``claim`` and keeps up to ``prefetch`` claimed-but-not-started jobs
  ready while the current one generates;
- the **engine** runs one job at a time (the run's ``execute``; engine calls in a thread);
- **finisher** tasks run a run's finishing step (generation: encode, upload at most
  ``upload_concurrency`` at once, ``complete``) while the next job generates;
- a **heartbeat** task, on its own schedule, reports every held job (waiting, running, finishing)
  with its progress and acts on the answers: ``cancel`` stops the engine at the next step and
  reports the job canceled, ``lost`` drops the job.

``pipelined=False`` runs the naive claim → generate → upload → complete loop, for comparison.
A graceful stop (:meth:`Worker.stop`, SIGTERM/SIGINT in :func:`run_worker`) stops claiming,
releases the jobs not started, lets the current job finish within ``shutdown_grace`` (else
interrupts and releases it), finishes uploads and completions, says ``stop`` and returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from sdfleet import __version__
from sdfleet.config import WorkerSettings
from sdfleet.domain import JobKind, WorkerState
from sdfleet.engine import Engine, load_engine
from sdfleet.errors import SdfleetError
from sdfleet.models import ModelCache, ModelResolver
from sdfleet.wire import (
    BeatItem,
    ClaimRequest,
    HeartbeatRequest,
    ModelSource,
    ModelUrlRequest,
    RegisterRequest,
    StopRequest,
    WorkerCapabilities,
)
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.context import JobRun, OffersItself, RunContext, RunFactory
from sdfleet.worker.held import HeldJob, Phase, WorkerStats
from sdfleet.worker.kinds import UnknownKind, default_kinds
from sdfleet.worker.outputs import Uploader
from sdfleet.worker.reports import Reporter

log = logging.getLogger("sdfleet.worker")

T = TypeVar("T")

MAX_REPORTED_MODELS = 500


def _as_state(value: str) -> WorkerState:
    """The worker state an answer names; one this worker does not know means "no work now"."""
    try:
        return WorkerState(value)
    except ValueError:
        return WorkerState.QUARANTINED


# ===================================================================== the worker


class Worker:
    """One worker process's pull loop around one engine (see the module docstring).

    ``client`` or ``transport`` may be given (tests, benchmarks); otherwise a :class:`WorkerClient`
    is built from ``settings.server``/``settings.token``. ``inline_max_bytes``: outputs up to this
    size are sent inline with ``complete`` when the blob store is the orchestrator's local one.
    ``kinds``: job kind → the factory of its run (default :func:`~sdfleet.worker.kinds.default_kinds`); the worker offers
    only the kinds both its engine and this table know.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        engine: Engine,
        *,
        client: WorkerClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        inline_max_bytes: int = 256 * 1024,
        stop_call_seconds: float = 5.0,
        cache: ModelCache | None = None,
        resolver: ModelResolver | None = None,
        kinds: Mapping[str, RunFactory] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._own_client = client is None
        self.client = client or WorkerClient(settings.server, settings.token, transport=transport)
        self.inline_max_bytes = inline_max_bytes
        self.stop_call_seconds = stop_call_seconds
        # registry models: fetched into the cache, handed to the engine through the resolver
        self._own_cache = cache is None
        self.cache = cache or ModelCache.from_settings(settings, refresh_url=self._model_url)
        self.resolver = resolver or ModelResolver()
        self.name = settings.name or f"{socket.gethostname()}-{os.getpid()}"
        self.stats = WorkerStats()
        self.worker_id: str | None = None
        self.lease_seconds = 0.0
        self.heartbeat_seconds = 0.0
        self.worker_state = WorkerState.ACTIVE
        self.kinds: dict[str, RunFactory] = dict(default_kinds() if kinds is None else kinds)

        self._held: dict[tuple[str, int], HeldJob] = {}  # by (job id, lease epoch)
        self._ready: deque[HeldJob] = deque()
        self._current: HeldJob | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()  # ready queue or current job changed, or stopping
        self._stop_requested = asyncio.Event()
        self._stop_requested_at: float | None = None
        self._force = False
        self._stopping = False
        self._done = asyncio.Event()
        self._running = False
        self._claiming: asyncio.Task[list[HeldJob]] | None = None
        self._beat_lock = asyncio.Lock()  # held while a heartbeat is on its way
        self._finish_slots = asyncio.Semaphore(max(2, settings.upload_concurrency))
        # made once registered (they carry the worker id): what every job run sees
        self._ctx: RunContext | None = None

    # ------------------------------------------------------------------ public control
    @property
    def held_jobs(self) -> dict[str, str]:
        """Job id → phase (waiting, running, finishing) of every job this worker holds now."""
        return {job.id: job.phase for job in self._held.values()}

    def request_stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler). A second call stops the current
        job at its next step instead of waiting for the grace period."""
        if self._done.is_set():
            return
        if self._stop_requested.is_set():
            self._force = True
            if self._current is not None:
                self._current.interrupt = True
            log.warning("worker.stop_forced worker_id=%s", self.worker_id)
            return
        self._stop_requested_at = time.monotonic()
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop gracefully and wait until :meth:`run` has returned."""
        self.request_stop()
        if self._running:
            await self._done.wait()

    async def run(self) -> None:
        """Register, then work until a stop is requested; returns after a clean shutdown."""
        self._running = True
        self.stats.started_at = time.monotonic()
        heart: asyncio.Task[None] | None = None
        main: asyncio.Task[None] | None = None
        claimer: asyncio.Task[None] | None = None
        try:
            if not await self._register():
                return
            heart = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
            if self.settings.pipelined:
                claimer = asyncio.create_task(self._claim_loop(), name="worker-claimer")
                main = asyncio.create_task(self._engine_loop(), name="worker-engine")
            else:
                main = asyncio.create_task(self._sequential_loop(), name="worker-sequential")
            stop_wait = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({main, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if main.done() and not self._stop_requested.is_set():
                main.result()  # a crash of the loop: raise it (after the cleanup below)
            await self._shutdown(main, claimer)
        finally:
            for task in (claimer, main, heart):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self.worker_id is not None:
                with contextlib.suppress(SdfleetError):
                    await self.client.stop(
                        StopRequest(worker_id=self.worker_id), retry_for=self.stop_call_seconds
                    )
            if self._own_cache:
                await self.cache.aclose()
            if self._own_client:
                await self.client.aclose()
            self.stats.stopped_at = time.monotonic()
            self._running = False
            self._done.set()
            log.info(
                "worker.stopped worker_id=%s completed=%d failed=%d released=%d duty_cycle=%.3f",
                self.worker_id,
                self.stats.jobs_completed,
                self.stats.jobs_failed,
                self.stats.jobs_released,
                self.stats.duty_cycle,
            )

    # ------------------------------------------------------------------ registration
    def _features(self, engine_features: tuple[str, ...] | list[str], device: str) -> list[str]:
        """The engine's features, plus ``gpu`` on a GPU (or where this worker opts into GPU-class work) and
        ``faces`` where face restorers can load (spandrel is installed)."""
        gpu = device.startswith(("cuda", "mps", "xpu")) or self.settings.gpu_work_on_cpu
        extra = ["gpu"] if gpu else []
        if importlib.util.find_spec("spandrel") is not None:  # face restorers load through it
            extra.append("faces")
        return [*engine_features, *(f for f in extra if f not in engine_features)]

    def _offered(self, caps_kinds: tuple[str, ...], features: list[str]) -> tuple[list[str], list[str]]:
        """The kinds and features to register: the engine's kinds this table runs (training only when
        allowed), then what the engine-free kinds offer themselves (annotate)."""
        kinds = [
            k
            for k in caps_kinds
            if k in self.kinds and (k != JobKind.TRAIN_LORA.value or self.settings.train)
        ]
        features = list(features)
        for factory in self.kinds.values():
            if isinstance(factory, OffersItself):
                offer = factory.offer(self.settings)
                kinds += [k for k in offer.kinds if k in self.kinds and k not in kinds]
                features += [f for f in offer.features if f not in features]
        return kinds, features

    async def _register(self) -> bool:
        caps = self.engine.capabilities()
        kinds, features = self._offered(caps.kinds, self._features(caps.features, caps.device))
        body = RegisterRequest(
            name=self.name,
            gpu_name=caps.gpu_name,
            gpu_memory_mb=caps.gpu_memory_mb,
            price_per_hour=self.settings.price_per_hour,
            engine=self.engine.name,
            version=__version__,
            capabilities=WorkerCapabilities(
                kinds=kinds,
                archs=list(caps.archs),
                max_pixels=min(caps.max_pixels, self.settings.max_pixels),
                features=features,
            ),
            info={
                "device": caps.device,
                "pipelined": self.settings.pipelined,
                "prefetch": self.settings.prefetch,
            },
        )
        answer = await self._unless_stopped(self.client.register(body))
        if answer is None:
            return False
        self.worker_id = answer.worker_id
        self.lease_seconds = answer.lease_seconds
        self.heartbeat_seconds = self.settings.heartbeat_seconds or answer.heartbeat_seconds
        self.inline_max_bytes = min(self.inline_max_bytes, answer.max_inline_output_bytes)
        reporter = Reporter(
            answer.worker_id,
            self.client,
            self.settings,
            self.stats,
            self.cache,
            held=self._held,
            ready=self._ready,
            beat_lock=self._beat_lock,
            notify=self._notify,
        )
        uploader = Uploader(
            answer.worker_id,
            self.client,
            self.stats,
            inline_max_bytes=self.inline_max_bytes,
            upload_concurrency=self.settings.upload_concurrency,
        )
        self._ctx = RunContext(
            worker_id=answer.worker_id,
            client=self.client,
            cache=self.cache,
            resolver=self.resolver,
            engine=self.engine,
            settings=self.settings,
            stats=self.stats,
            reporter=reporter,
            uploader=uploader,
            spawn=self._spawn,
        )
        log.info(
            "worker.registered worker_id=%s name=%s engine=%s gpu=%s lease=%.1f heartbeat=%.1f pipelined=%s",
            self.worker_id,
            self.name,
            self.engine.name,
            caps.gpu_name,
            self.lease_seconds,
            self.heartbeat_seconds,
            self.settings.pipelined,
        )
        return True

    async def _unless_stopped(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Await ``coro`` unless a stop is requested first (then cancel it and return None)."""
        task = asyncio.ensure_future(coro)
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    # ------------------------------------------------------------------ claiming
    def _claim_target(self) -> int:
        """How many more jobs to claim now: ``prefetch`` waiting, plus one if the engine is idle."""
        want = max(0, self.settings.prefetch) + (0 if self._current is not None else 1)
        return want - len(self._ready)

    def cached_models(self) -> list[str] | None:
        """Registry names of the models on this worker's disk, reported with every claim and
        heartbeat so the orchestrator prefers jobs that need no download (None: nothing to report).
        The most recently used come first, at most ``MAX_REPORTED_MODELS`` of them."""
        names = self.cache.names_on_disk()
        return names[:MAX_REPORTED_MODELS] if names else None

    async def _claim(self, max_jobs: int) -> list[HeldJob]:
        assert self.worker_id is not None
        started = time.monotonic()
        body = ClaimRequest(
            worker_id=self.worker_id,
            max_jobs=max_jobs,
            wait=self.settings.claim_wait,
            loaded_models=self.engine.loaded_models(),
            cached_models=self.cached_models(),
        )
        answer = await self.client.claim(body)
        if _as_state(answer.worker_state) != self.worker_state:
            log.warning(
                "worker.state worker_id=%s state=%s message=%s",
                self.worker_id,
                answer.worker_state,
                answer.message,
            )
            self.worker_state = _as_state(answer.worker_state)
        if not answer.jobs:
            # quarantined (answered at once), or a server that does not long-poll: do not spin
            elapsed = time.monotonic() - started
            pause = self.settings.claim_wait if _as_state(answer.worker_state) != WorkerState.ACTIVE else 0.5
            if elapsed < pause:
                await asyncio.sleep(min(pause, 30.0) - elapsed)
            return []
        now = time.monotonic()
        if self.stats.first_claim_at is None:
            self.stats.first_claim_at = now
        claimed = []
        for c in answer.jobs:
            for old in [j for j in self._held.values() if j.id == c.job_id and j.epoch < c.epoch]:
                # handed out again (to us): the older lease is gone even if no heartbeat said so
                self._reporter.mark_lost(old)
            for m in c.models:  # signed URLs on the orchestrator (blob: sources) are relative
                if m.url:
                    m.url = self.client.resolve(m.url)
            held = HeldJob(claim=c, claimed_at=now)
            if c.inputs:  # download init images / masks now, while the engine is busy elsewhere
                held.inputs = asyncio.create_task(self._fetch_inputs(c.inputs))
            if c.models:  # and the models it names, into the cache (pinned while we hold the job)
                held.pinned = self.cache.pin(m.sha256 for m in c.models)
                held.models = asyncio.create_task(self._fetch_models(c.models))
                held.models.add_done_callback(_retrieve)
            self._held[(c.job_id, c.epoch)] = held
            claimed.append(held)
            self.stats.jobs_claimed += 1
            log.info("job.claimed job_id=%s epoch=%d worker_id=%s", c.job_id, c.epoch, self.worker_id)
        self.stats.max_held = max(self.stats.max_held, len(self._held))
        return claimed

    async def _claim_cancellable(self, max_jobs: int) -> list[HeldJob]:
        self._claiming = asyncio.create_task(self._claim(max_jobs))
        try:
            return await self._claiming
        finally:
            self._claiming = None

    async def _claim_loop(self) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        errors = 0
        while not self._stopping:
            need = self._claim_target()
            if need <= 0:
                await self._wait_changed()
                continue
            try:
                claimed = await self._claim_cancellable(need)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except SdfleetError as exc:
                errors += 1
                log.warning("worker.claim_error worker_id=%s error=%s", self.worker_id, exc)
                await asyncio.sleep(backoff.delay(errors))
                continue
            errors = 0
            for job in claimed:
                if not self._reporter.holds(job):
                    continue  # dropped by a heartbeat answer already
                if self._stopping:
                    self._spawn(self._reporter.release(job, "worker stopping"))
                else:
                    self._ready.append(job)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # ------------------------------------------------------------------ the engine
    async def _engine_loop(self) -> None:
        while True:
            while not self._ready and not self._stopping:
                await self._wait_changed()
            if self._stopping:
                return
            job = self._ready.popleft()
            self._current = job
            self._notify()  # the claimer tops the waiting queue up again
            try:
                finish = await self._run(job).execute()
            finally:
                self._current = None
            if finish is not None:
                await self._finish_slots.acquire()
                self._spawn(finish(), slot=True)
            self._notify()

    async def _sequential_loop(self) -> None:
        while not self._stopping:
            try:
                claimed = await self._claim_cancellable(1)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except SdfleetError as exc:
                log.warning("worker.claim_error worker_id=%s error=%s", self.worker_id, exc)
                await asyncio.sleep(1.0)
                continue
            for job in claimed:
                if not self._reporter.holds(job):
                    continue
                if self._stopping:
                    await self._reporter.release(job, "worker stopping")
                    continue
                self._current = job
                try:
                    finish = await self._run(job).execute()
                finally:
                    self._current = None
                if finish is not None:
                    await finish()

    @property
    def _reporter(self) -> Reporter:
        assert self._ctx is not None, "the worker is not registered"
        return self._ctx.reporter

    def _run(self, job: HeldJob) -> JobRun:
        """The run of ``job``, made by the factory registered for its kind."""
        assert self._ctx is not None
        factory = self.kinds.get(job.claim.kind, UnknownKind)
        return factory(self._ctx, job)

    async def _fetch_inputs(self, inputs: dict[str, str]) -> dict[str, str]:
        started = time.monotonic()
        fetched = {}
        for ref, url in inputs.items():
            data = await self.client.get_blob(url)
            fetched[ref] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        log.debug("job.inputs_fetched count=%d seconds=%.3f", len(inputs), time.monotonic() - started)
        return fetched

    async def _fetch_models(self, models: list[ModelSource]) -> dict[tuple[str, str], Path]:
        started = time.monotonic()
        paths = await self.cache.fetch_all(models)
        log.debug("job.models_ready count=%d seconds=%.3f", len(models), time.monotonic() - started)
        return paths

    async def _model_url(self, name: str) -> ModelSource:
        assert self.worker_id is not None
        fresh = await self.client.model_url(ModelUrlRequest(worker_id=self.worker_id, name=name))
        if fresh.url:
            fresh.url = self.client.resolve(fresh.url)
        return fresh

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.heartbeat_seconds)
        next_at = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            await self._beat(interval)

    async def _beat(self, interval: float) -> None:
        assert self.worker_id is not None
        jobs = [j for j in self._held.values() if j.phase != Phase.REPORTING][:256]
        body = HeartbeatRequest(
            worker_id=self.worker_id,
            jobs=[
                BeatItem(job_id=j.id, epoch=j.epoch, step=j.step, total=j.total, **(j.info or {}))
                for j in jobs
            ],
            loaded_models=self.engine.loaded_models(),
            cached_models=self.cached_models(),
        )
        try:
            async with self._beat_lock:
                answer = await self.client.heartbeat(body, retry_for=max(interval, self.lease_seconds / 2))
        except SdfleetError as exc:
            log.warning("worker.heartbeat_error worker_id=%s error=%s", self.worker_id, exc)
            return
        if _as_state(answer.worker_state) != self.worker_state:
            log.warning("worker.state worker_id=%s state=%s", self.worker_id, answer.worker_state)
            self.worker_state = _as_state(answer.worker_state)
        # answers come in the order of the beats; fall back to ids if a server reorders them
        if [a.job_id for a in answer.jobs] == [j.id for j in jobs]:
            pairs = list(zip(jobs, answer.jobs, strict=True))
        else:
            by_id = {j.id: j for j in jobs}
            pairs = [(by_id[a.job_id], a) for a in answer.jobs if a.job_id in by_id]
        reporter = self._reporter
        for job, item in pairs:
            if not reporter.holds(job) or item.action == "continue":
                continue
            if item.action == "cancel" and not job.cancel:
                log.info("job.cancel_requested job_id=%s phase=%s", job.id, job.phase)
                job.cancel = True
                if job.phase == Phase.WAITING and job in self._ready:
                    self._ready.remove(job)
                    self._spawn(reporter.cancel(job))
                    self._notify()
            elif item.action == "lost":
                reporter.mark_lost(job)

    # ------------------------------------------------------------------ shutdown
    async def _shutdown(self, main: asyncio.Task[None], claimer: asyncio.Task[None] | None) -> None:
        self._stopping = True
        self._notify()
        log.info("worker.stopping worker_id=%s held=%d", self.worker_id, len(self._held))
        if self._claiming is not None:
            self._claiming.cancel()
        if claimer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await claimer
        while self._ready:
            job = self._ready.popleft()
            self._spawn(self._reporter.release(job, "worker stopping"))
        grace = self.settings.shutdown_grace
        started = self._stop_requested_at or time.monotonic()
        remaining = max(0.0, started + grace - time.monotonic())
        if self._force:
            remaining = 0.0
        done, _ = await asyncio.wait({main}, timeout=remaining)
        if not done:
            current = self._current
            if current is not None:
                log.warning("worker.grace_expired worker_id=%s job_id=%s", self.worker_id, current.id)
                current.interrupt = True
        await asyncio.wait({main})
        if main.exception() is not None:
            log.error("worker.loop_error worker_id=%s error=%s", self.worker_id, main.exception())
        # uploads and completions of finished work; bounded so a vanished orchestrator cannot
        # hold the process forever (the leases then expire and the jobs run elsewhere)
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=max(grace, 10.0))
            for task in late:
                task.cancel()
            if late:
                log.error("worker.abandoned worker_id=%s tasks=%d", self.worker_id, len(late))
                await asyncio.wait(late)

    # ------------------------------------------------------------------ tasks
    def _spawn(self, coro: Awaitable[None], *, slot: bool = False) -> None:
        async def wrapped() -> None:
            try:
                await coro
            finally:
                if slot:
                    self._finish_slots.release()

        task = asyncio.create_task(wrapped())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker.task_error worker_id=%s error=%r", self.worker_id, task.exception())
        self._notify()


# ===================================================================== entry point


async def run_worker(settings: WorkerSettings) -> None:
    """``sdfleet worker``: build the engine, run one worker until SIGTERM/SIGINT, stop cleanly. A worker of
    role ``annotate`` has no generation engine: it runs annotate jobs only (no torch, no diffusers)."""
    resolver = ModelResolver()
    if settings.role == "annotate":
        from sdfleet.worker.annotate import AnnotatorHost, annotate_kinds

        worker = Worker(settings, AnnotatorHost(), resolver=resolver, kinds=annotate_kinds())
    else:
        worker = Worker(settings, _engine(settings, resolver), resolver=resolver)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.request_stop)
            installed.append(sig)
    try:
        await worker.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _engine(settings: WorkerSettings, resolver: ModelResolver) -> Engine:
    """The generation engine the settings name, finding registry models through ``resolver``."""
    return load_engine(
        settings.engine,
        model=settings.model,
        device=settings.device,
        fake_step_seconds=settings.fake_step_seconds,
        allow_pickle=settings.allow_pickle,
        memory_budget_mb=settings.memory_budget_mb,
        lookup=resolver.lookup,
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (a job dropped before it ran never awaits it)."""
    if not task.cancelled():
        task.exception()


__all__ = ["MAX_REPORTED_MODELS", "Worker", "run_worker"]
