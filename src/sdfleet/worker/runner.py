"""The worker: registers with the orchestrator, pulls jobs, runs the engine, uploads, reports.

Pipelined (the default), four kinds of work overlap so the engine is not idle during network I/O:

- a **claimer** task long-polls ``claim`` and keeps up to ``prefetch`` claimed-but-not-started jobs
  ready while the current one generates;
- the **engine** runs one job at a time in a thread (``asyncio.to_thread``), reporting steps;
- **finisher** tasks PNG-encode the images (infotext in the ``parameters`` chunk), upload them
  (at most ``upload_concurrency`` at once) and ``complete`` the job while the next one generates;
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
import hashlib
import io
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdfleet import __version__
from sdfleet.config import WorkerSettings
from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine import Engine, load_engine
from sdfleet.engine.base import GeneratedImage, GenerationResult, StepInfo
from sdfleet.errors import (
    EngineError,
    Interrupted,
    InvalidInput,
    ModelUnavailable,
    SdfleetError,
    StaleLease,
    ValidationError,
)
from sdfleet.models.cache import ModelCache, ModelResolver
from sdfleet.wire import (
    BeatItem,
    ClaimedJob,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    ModelSource,
    ModelUrlRequest,
    OutputItem,
    RegisterRequest,
    ReleaseRequest,
    StopRequest,
    UploadRequest,
    UploadTarget,
    WorkerCapabilities,
)
from sdfleet.worker.client import Backoff, Unreachable, WorkerClient
from sdfleet.worker.training import TrainingRun

log = logging.getLogger("sdfleet.worker")

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286

T = TypeVar("T")


# ===================================================================== records


MAX_REPORTED_MODELS = 500


@dataclass(slots=True)
class WorkerStats:
    """Counters and times of one worker run. Times are ``time.monotonic()`` seconds.

    ``duty_cycle`` is engine busy time over wall time since the worker started (until it stopped,
    or now); benchmarks that want "while work was queued" use ``started_at``,
    ``last_engine_end_at`` and ``last_completed_at``.
    """

    started_at: float | None = None
    stopped_at: float | None = None
    first_claim_at: float | None = None
    first_engine_start_at: float | None = None
    last_engine_end_at: float | None = None
    last_completed_at: float | None = None
    engine_busy_seconds: float = 0.0
    jobs_claimed: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_canceled: int = 0
    jobs_released: int = 0
    jobs_lost: int = 0
    jobs_stale: int = 0
    images: int = 0
    bytes_uploaded: int = 0
    max_held: int = 0

    @property
    def wall_seconds(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.stopped_at if self.stopped_at is not None else time.monotonic()
        return max(0.0, end - self.started_at)

    @property
    def duty_cycle(self) -> float:
        wall = self.wall_seconds
        return self.engine_busy_seconds / wall if wall > 0 else 0.0


@dataclass(eq=False)
class HeldJob:
    """A job this worker holds a lease on, from claim until it is reported (or dropped)."""

    claim: ClaimedJob
    claimed_at: float
    phase: str = "waiting"  # waiting | running | finishing | reporting (fail/release on its way)
    step: int = 0
    total: int = 0
    engine_seconds: float = 0.0
    cancel: bool = False
    lost: bool = False
    interrupt: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    inputs: asyncio.Task[dict[str, str]] | None = None  # ref → data URL, fetched while waiting
    models: asyncio.Task[dict[tuple[str, str], Path]] | None = None  # (kind, name) → file, prefetched
    pinned: list[str] = field(default_factory=list)  # cache blobs kept from eviction while we hold the job
    info: dict[str, float] | None = None  # progress beyond step/total (training: loss, it_per_s, eta_seconds)

    @property
    def id(self) -> str:
        return self.claim.job_id

    @property
    def epoch(self) -> int:
        return self.claim.epoch

    def should_stop(self) -> bool:
        return self.cancel or self.lost or self.interrupt


@dataclass(slots=True)
class EncodedOutput:
    index: int
    data: bytes
    content_type: str
    seed: int
    infotext: str


# ===================================================================== encoding


def encode_image(
    image: Image.Image, infotext: str, content_type: str = "image/png", quality: int = 95
) -> bytes:
    """Encode one image with its infotext: PNG ``parameters`` text chunk (plus any other text the
    engine attached in ``image.info``), or EXIF UserComment for JPEG/WebP (as A1111 does)."""
    buf = io.BytesIO()
    if content_type == "image/png":
        meta = PngInfo()
        meta.add_text("parameters", infotext)
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str) and key != "parameters":
                meta.add_text(key, value)
        image.save(buf, format="PNG", pnginfo=meta)
    else:
        exif = Image.Exif()
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\x00" + infotext.encode("utf-16-be")
        fmt = "JPEG" if content_type == "image/jpeg" else "WEBP"
        rgb = image.convert("RGB") if fmt == "JPEG" else image
        rgb.save(buf, format=fmt, quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def _encode_all(
    images: list[GeneratedImage], types: dict[int, str], default_type: str, quality: int
) -> list[EncodedOutput]:
    out = []
    for index, img in enumerate(images):
        ct = types.get(index, default_type)
        out.append(
            EncodedOutput(
                index, encode_image(img.image, img.infotext, ct, quality), ct, img.seed, img.infotext
            )
        )
    return out


# ===================================================================== the worker


class Worker:
    """One worker process's pull loop around one engine (see the module docstring).

    ``client`` or ``transport`` may be given (tests, benchmarks); otherwise a :class:`WorkerClient`
    is built from ``settings.server``/``settings.token``. ``inline_max_bytes``: outputs up to this
    size are sent inline with ``complete`` when the blob store is the orchestrator's local one.
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
        self.worker_state = "active"

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
        self._inline_allowed = True
        self._beat_lock = asyncio.Lock()  # held while a heartbeat is on its way
        slots = max(1, settings.upload_concurrency)
        self._upload_slots = asyncio.Semaphore(slots)
        self._finish_slots = asyncio.Semaphore(max(2, slots))

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
    async def _register(self) -> bool:
        caps = self.engine.capabilities()
        body = RegisterRequest(
            name=self.name,
            gpu_name=caps.gpu_name,
            gpu_memory_mb=caps.gpu_memory_mb,
            price_per_hour=self.settings.price_per_hour,
            engine=self.engine.name,
            version=__version__,
            capabilities=WorkerCapabilities(
                kinds=[k for k in caps.kinds if k != JobKind.TRAIN_LORA.value or self.settings.train],
                archs=list(caps.archs),
                max_pixels=min(caps.max_pixels, self.settings.max_pixels),
                features=list(caps.features),
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
        if answer.worker_state != self.worker_state:
            log.warning(
                "worker.state worker_id=%s state=%s message=%s",
                self.worker_id,
                answer.worker_state,
                answer.message,
            )
            self.worker_state = answer.worker_state
        if not answer.jobs:
            # quarantined (answered at once), or a server that does not long-poll: do not spin
            elapsed = time.monotonic() - started
            pause = self.settings.claim_wait if answer.worker_state != "active" else 0.5
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
                self._mark_lost(old)
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
                if not self._holds(job):
                    continue  # dropped by a heartbeat answer already
                if self._stopping:
                    self._spawn(self._release(job, "worker stopping"))
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
                result = await self._generate(job)
            finally:
                self._current = None
            if result is not None:
                await self._finish_slots.acquire()
                self._spawn(self._finish(job, result), slot=True)
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
                if not self._holds(job):
                    continue
                if self._stopping:
                    await self._release(job, "worker stopping")
                    continue
                self._current = job
                try:
                    result = await self._generate(job)
                finally:
                    self._current = None
                if result is not None:
                    await self._finish(job, result)

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

    async def _models_ready(self, job: HeldJob) -> dict[tuple[str, str], Path] | ModelUnavailable:
        """The job's model files once fetched (waiting, if the prefetch is not done, until it is or
        the job is to stop); the error when one cannot be had."""
        task = job.models
        if task is None:
            return {}
        while not task.done() and not job.should_stop():
            await asyncio.wait({task}, timeout=0.5)
        if not task.done():
            return {}  # stopping: the caller reports the job; the download goes on for later jobs
        try:
            return task.result()
        except ModelUnavailable as exc:
            return exc
        except SdfleetError as exc:
            return ModelUnavailable(f"could not fetch the job's models: {exc}", retryable=True)
        except Exception as exc:
            log.exception("job.models_crashed job_id=%s", job.id)
            return ModelUnavailable(f"could not fetch the job's models: {type(exc).__name__}: {exc}")

    @staticmethod
    def _with_inputs(params: dict[str, Any], fetched: dict[str, str]) -> dict[str, Any]:
        """The job's params with ``blob:`` references replaced by the fetched images."""
        out = dict(params)
        if out.get("init_images"):
            out["init_images"] = [fetched.get(v, v) for v in out["init_images"]]
        if isinstance(out.get("mask"), str):
            out["mask"] = fetched.get(out["mask"], out["mask"])
        return out

    async def _parse(self, job: HeldJob) -> tuple[JobKind, GenerationSpec] | str:
        params = job.claim.params
        if job.inputs is not None:
            try:
                params = self._with_inputs(params, await job.inputs)
            except SdfleetError as exc:
                return f"retry: could not fetch the job's input images: {exc}"
        try:
            return JobKind(job.claim.kind), GenerationSpec.model_validate(params)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return f"this worker cannot read the job: {exc}"

    async def run_engine(
        self,
        job: HeldJob,
        label: str,
        call: Callable[[], T],
        *,
        keep: tuple[type[Exception], ...] = (),
    ) -> tuple[T | None, BaseException | None]:
        """Run ``call`` in a thread as ``job``'s engine time (``job.timings[label]``, the duty cycle).

        Interruptions, engine errors, input errors (:class:`ValidationError`: the engine rejects the
        job's input) and the ``keep`` types come back as the error; any other exception is an engine
        bug, logged and reported as a retryable engine error — it must not kill the worker."""
        started = time.monotonic()
        if self.stats.first_engine_start_at is None:
            self.stats.first_engine_start_at = started
        expected: tuple[type[Exception], ...] = (Interrupted, EngineError, ValidationError, *keep)
        try:
            return await asyncio.to_thread(call), None
        except expected as exc:
            return None, exc
        except Exception as exc:
            log.exception("job.engine_crashed job_id=%s work=%s", job.id, label)
            return None, EngineError(f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            ended = self.stats.last_engine_end_at = time.monotonic()
            busy = ended - started
            job.engine_seconds += busy
            job.timings[label] = busy
            self.stats.engine_busy_seconds += busy

    async def _generate(self, job: HeldJob) -> GenerationResult | None:
        """Run the engine on one job. Returns the result to finish, or None when the job was
        reported (failed, canceled, released) or dropped here."""
        if job.claim.kind == JobKind.TRAIN_LORA.value:  # trains, uploads and reports on its own
            await TrainingRun(self, job).run()
            return None
        parsed = await self._parse(job)
        if isinstance(parsed, str):
            retry = parsed.startswith("retry: ")
            code = "input_unavailable" if retry else "invalid_params"
            self._spawn(self._fail(job, code, parsed.removeprefix("retry: "), retryable=retry))
            return None
        kind, spec = parsed
        models = await self._models_ready(job)
        if isinstance(models, ModelUnavailable):
            log.warning(
                "job.models_unavailable job_id=%s retryable=%s error=%s", job.id, models.retryable, models
            )
            self._spawn(self._fail(job, models.code, str(models), retryable=models.retryable))
            return None
        if job.should_stop():
            self._spawn(self._after_stop(job, None))
            return None
        self.resolver.use(models)
        self.cache.touch(job.pinned)
        job.phase = "running"
        job.total = spec.steps * spec.n_iter
        job.timings["wait"] = time.monotonic() - job.claimed_at
        log.info("job.started job_id=%s epoch=%d steps=%d", job.id, job.epoch, spec.steps)
        log.debug("job.prompt job_id=%s prompt=%r", job.id, spec.prompt)

        def on_step(info: StepInfo) -> None:
            job.step = info.step
            job.total = info.total

        result, error = await self.run_engine(
            job, "generate", lambda: self.engine.generate(kind, spec, on_step, job.should_stop)
        )
        # reports go out in the background: the engine moves on to the next job meanwhile
        if job.should_stop():
            self._spawn(self._after_stop(job, error))
            return None
        if isinstance(error, Interrupted):
            self._spawn(self._fail(job, "interrupted", str(error), retryable=True))
            return None
        if isinstance(error, ValidationError):  # InvalidInput included: the input's fault, not ours
            self._spawn(self._fail_input(job, error))
            return None
        if isinstance(error, EngineError):
            log.warning("job.engine_error job_id=%s retryable=%s error=%s", job.id, error.retryable, error)
            self._spawn(self._fail(job, error.code, str(error), retryable=error.retryable))
            return None
        assert result is not None
        job.phase = "finishing"
        return result

    async def _after_stop(self, job: HeldJob, error: BaseException | None) -> None:
        """A job whose engine run was stopped (or skipped): lost, canceled or interrupted."""
        if job.lost:
            self._drop(job, "lost")
        elif job.cancel:
            await self._fail(job, "canceled", "canceled by the client", retryable=False, canceled=True)
        else:
            reason = "worker stopping" + (f" ({error})" if error is not None else "")
            await self._release(job, reason)

    # ------------------------------------------------------------------ upload and complete
    async def _finish(self, job: HeldJob, result: GenerationResult) -> None:
        assert self.worker_id is not None
        try:
            spec_format = str(job.claim.params.get("output_format", "png"))
            default_type = CONTENT_TYPES.get(spec_format, "image/png")
            quality = int(job.claim.params.get("output_quality", 95))
            targets = {t.index: t for t in job.claim.uploads}
            types = {t.index: t.content_type for t in job.claim.uploads}
            t0 = time.monotonic()
            outputs = await asyncio.to_thread(_encode_all, result.images, types, default_type, quality)
            t1 = time.monotonic()
            job.timings["encode"] = t1 - t0
            items = await self._output_items(job, outputs, targets, inline=self._inline_allowed)
            job.timings["upload"] = time.monotonic() - t1
            if job.should_stop():
                await self._after_stop(job, None)
                return
            info = {k: v for k, v in result.info.items() if isinstance(v, str | int | float)}
            try:
                answer = await self.client.complete(self._completion(job, items, {"info": info}))
            except SdfleetError as exc:
                if not (exc.field or "").startswith("outputs.data_b64") or not any(i.data_b64 for i in items):
                    raise
                # this server takes no (or smaller) inline outputs: upload from now on
                log.warning("worker.inline_refused worker_id=%s error=%s", self.worker_id, exc)
                self._inline_allowed = False
                items = await self._output_items(job, outputs, targets, inline=False)
                answer = await self.client.complete(self._completion(job, items, {"info": info}))
            status = answer.results[0].status if answer.results else "accepted"
            if status == "stale":
                self._drop(job, "stale", answer.results[0].message)
                return
            self.stats.jobs_completed += 1
            self.stats.images += len(items)
            self.stats.last_completed_at = time.monotonic()
            log.info(
                "job.completed job_id=%s epoch=%d images=%d engine_seconds=%.3f status=%s",
                job.id,
                job.epoch,
                len(items),
                job.engine_seconds,
                status,
            )
            self._forget(job)
        except StaleLease as exc:
            self._drop(job, "stale", str(exc))
        except Unreachable as exc:  # only when the client has a retry deadline or was closed
            log.error("job.abandoned job_id=%s error=%s", job.id, exc)
            self._forget(job)
        except SdfleetError as exc:
            log.error("job.complete_rejected job_id=%s error=%s", job.id, exc)
            await self._fail(
                job, "complete_rejected", f"the orchestrator refused the result: {exc}", retryable=True
            )
        except Exception as exc:
            log.exception("job.finish_crashed job_id=%s", job.id)
            await self._fail(job, "worker_error", f"{type(exc).__name__}: {exc}", retryable=True)

    def _completion(self, job: HeldJob, items: list[OutputItem], result: dict[str, Any]) -> CompleteRequest:
        """The completion report of a held job: its outputs, engine time, timings and ``result``."""
        assert self.worker_id is not None
        return CompleteRequest(
            worker_id=self.worker_id,
            job_id=job.id,
            epoch=job.epoch,
            outputs=items,
            engine_seconds=job.engine_seconds,
            timings={k: round(v, 4) for k, v in job.timings.items()},
            result=result,
        )

    async def _output_items(
        self, job: HeldJob, outputs: list[EncodedOutput], targets: dict[int, UploadTarget], *, inline: bool
    ) -> list[OutputItem]:
        items = await asyncio.gather(
            *(self._output_item(job, o, targets.get(o.index), inline) for o in outputs)
        )
        return list(items)

    async def _output_item(
        self, job: HeldJob, out: EncodedOutput, target: UploadTarget | None, inline: bool
    ) -> OutputItem:
        assert self.worker_id is not None
        sha = hashlib.sha256(out.data).hexdigest()
        common: dict[str, Any] = {
            "index": out.index,
            "content_type": out.content_type,
            "size": len(out.data),
            "sha256": sha,
            "seed": out.seed,
            "infotext": out.infotext[:65536],
        }
        if target is None:
            target = await self.client.upload_target(
                UploadRequest(
                    worker_id=self.worker_id,
                    job_id=job.id,
                    epoch=job.epoch,
                    index=out.index,
                    content_type=out.content_type,
                )
            )
        if inline and WorkerClient.is_local(target.url) and len(out.data) <= self.inline_max_bytes:
            return OutputItem(key=target.key, data_b64=base64.b64encode(out.data).decode(), **common)
        async with self._upload_slots:
            if job.should_stop():
                return OutputItem(key=target.key, **common)
            try:
                await self.client.put_blob(target.url, out.data, target.content_type, headers=target.headers)
            except SdfleetError as exc:
                if exc.status not in (401, 403):
                    raise
                # the signed URL expired (a long outage): ask for a fresh one, once
                log.info("job.upload_renew job_id=%s index=%d", job.id, out.index)
                fresh = await self.client.upload_target(
                    UploadRequest(
                        worker_id=self.worker_id,
                        job_id=job.id,
                        epoch=job.epoch,
                        index=out.index,
                        content_type=out.content_type,
                    )
                )
                await self.client.put_blob(fresh.url, out.data, fresh.content_type, headers=fresh.headers)
                target = fresh
        self.stats.bytes_uploaded += len(out.data)
        return OutputItem(key=target.key, **common)

    # ------------------------------------------------------------------ reports
    async def _fail_input(self, job: HeldJob, error: ValidationError) -> None:
        """Report that the job's input cannot be processed (``invalid_input``, naming the field): a
        user error, not retried and counted against no worker."""
        message = str(error)
        if error.field and not message.startswith(error.field):
            message = f"{error.field}: {message}"
        log.warning("job.invalid_input job_id=%s field=%s error=%s", job.id, error.field, message)
        await self._fail(job, InvalidInput.code, message, retryable=False, field=error.field)

    async def _fail(
        self,
        job: HeldJob,
        code: str,
        message: str,
        *,
        retryable: bool,
        canceled: bool = False,
        field: str | None = None,
    ) -> None:
        assert self.worker_id is not None
        await self._unbeat(job)
        body = FailRequest(
            worker_id=self.worker_id,
            job_id=job.id,
            epoch=job.epoch,
            code=code[:64],
            message=message[:4000],
            retryable=retryable,
            engine_seconds=job.engine_seconds,
            field=field[:200] if field else None,
        )
        try:
            await self.client.fail(body)
        except StaleLease as exc:
            self._drop(job, "stale", str(exc))
            return
        except SdfleetError as exc:
            log.error("job.fail_report_error job_id=%s error=%s", job.id, exc)
        self._forget(job)
        if canceled:
            self.stats.jobs_canceled += 1
            log.info("job.canceled job_id=%s epoch=%d", job.id, job.epoch)
        else:
            self.stats.jobs_failed += 1
            log.info("job.failed job_id=%s epoch=%d code=%s retryable=%s", job.id, job.epoch, code, retryable)

    async def _unbeat(self, job: HeldJob) -> None:
        """Keep ``job`` out of heartbeats from now on, and let a heartbeat already on its way land
        first: a beat that reached the server after a release or retryable fail would take the
        re-queued job back for this worker (the same epoch is still ours)."""
        job.phase = "reporting"
        async with self._beat_lock:
            pass

    async def _release(self, job: HeldJob, reason: str) -> None:
        assert self.worker_id is not None
        await self._unbeat(job)
        body = ReleaseRequest(
            worker_id=self.worker_id,
            job_id=job.id,
            epoch=job.epoch,
            reason=reason[:2000],
            engine_seconds=job.engine_seconds,
        )
        try:
            await self.client.release(body, retry_for=max(5.0, self.settings.shutdown_grace))
        except StaleLease as exc:
            self._drop(job, "stale", str(exc))
            return
        except SdfleetError as exc:
            log.error("job.release_error job_id=%s error=%s", job.id, exc)
        self._forget(job)
        self.stats.jobs_released += 1
        log.info("job.released job_id=%s epoch=%d reason=%s", job.id, job.epoch, reason)

    def _holds(self, job: HeldJob) -> bool:
        return self._held.get((job.id, job.epoch)) is job

    def _forget(self, job: HeldJob) -> None:
        if self._holds(job):
            del self._held[(job.id, job.epoch)]
        if job.pinned:
            self.cache.unpin(job.pinned)
            job.pinned = []

    def _drop(self, job: HeldJob, why: str, detail: str = "") -> None:
        self._forget(job)
        with contextlib.suppress(ValueError):
            self._ready.remove(job)
        if why == "lost":
            self.stats.jobs_lost += 1
        else:
            self.stats.jobs_stale += 1
        log.warning("job.dropped job_id=%s epoch=%d reason=%s %s", job.id, job.epoch, why, detail)

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
        jobs = [j for j in self._held.values() if j.phase != "reporting"][:256]
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
        if answer.worker_state != self.worker_state:
            log.warning("worker.state worker_id=%s state=%s", self.worker_id, answer.worker_state)
            self.worker_state = answer.worker_state
        # answers come in the order of the beats; fall back to ids if a server reorders them
        if [a.job_id for a in answer.jobs] == [j.id for j in jobs]:
            pairs = list(zip(jobs, answer.jobs, strict=True))
        else:
            by_id = {j.id: j for j in jobs}
            pairs = [(by_id[a.job_id], a) for a in answer.jobs if a.job_id in by_id]
        for job, item in pairs:
            if not self._holds(job) or item.action == "continue":
                continue
            if item.action == "cancel" and not job.cancel:
                log.info("job.cancel_requested job_id=%s phase=%s", job.id, job.phase)
                job.cancel = True
                if job.phase == "waiting" and job in self._ready:
                    self._ready.remove(job)
                    self._spawn(
                        self._fail(job, "canceled", "canceled by the client", retryable=False, canceled=True)
                    )
                    self._notify()
            elif item.action == "lost":
                self._mark_lost(job)

    def _mark_lost(self, job: HeldJob) -> None:
        """Our lease on ``job`` is gone: stop generating it, do not upload or complete it."""
        if job.lost:
            return
        job.lost = True
        if job.phase == "waiting" and job in self._ready:
            self._drop(job, "lost")
            self._notify()
        else:
            log.warning("job.lost job_id=%s epoch=%d phase=%s", job.id, job.epoch, job.phase)

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
            self._spawn(self._release(job, "worker stopping"))
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
    """``sdfleet worker``: build the engine, run one worker until SIGTERM/SIGINT, stop cleanly."""
    resolver = ModelResolver()
    engine = load_engine(
        settings.engine,
        model=settings.model,
        device=settings.device,
        fake_step_seconds=settings.fake_step_seconds,
        allow_pickle=settings.allow_pickle,
        memory_budget_mb=settings.memory_budget_mb,
        lookup=resolver.lookup,
    )
    worker = Worker(settings, engine, resolver=resolver)
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


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (a job dropped before it ran never awaits it)."""
    if not task.cancelled():
        task.exception()


__all__ = [
    "EncodedOutput",
    "HeldJob",
    "Worker",
    "WorkerStats",
    "encode_image",
    "run_worker",
]
