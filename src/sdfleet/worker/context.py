"""The seam between the runner and a job kind: :class:`RunContext` (what a run may use) and the
:class:`JobRun` protocol (what a kind implements). A kind sees only this context, never the
runner: it runs the engine through :meth:`RunContext.run_engine`, waits for its models with
:meth:`RunContext.models_ready`, uploads with ``ctx.uploader`` and ends the job through
``ctx.reporter`` (the only code that ends a held job)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from sdfleet.config import WorkerSettings
from sdfleet.engine import Engine
from sdfleet.engine.pool import NetPool
from sdfleet.errors import EngineError, Interrupted, ModelUnavailable, SdfleetError, ValidationError
from sdfleet.models import ModelCache, ModelResolver
from sdfleet.worker.client import WorkerClient
from sdfleet.worker.held import HeldJob, WorkerStats
from sdfleet.worker.outputs import Uploader
from sdfleet.worker.reports import Reporter

log = logging.getLogger("sdfleet.worker")

T = TypeVar("T")


Finish = Callable[[], Awaitable[None]]
"""The off-engine tail of a run (encode, upload, complete); never raises."""


class JobRun(Protocol):
    """One held job of one kind on this worker, made by a :data:`RunFactory` for each job.

    :meth:`execute` runs while the job holds the engine (one job at a time). It either ends the job
    itself through ``ctx.reporter`` (a failure, a stop, or a kind that finishes inline) and
    returns None, or returns its :data:`Finish` step: the runner runs that in the background,
    with the engine already on the next job, when the worker is pipelined (else at once). Neither
    raises for a job's own trouble: every outcome is reported.
    """

    async def execute(self) -> Finish | None: ...


@dataclass(eq=False, slots=True)
class RunContext:
    """What a job run may use: the worker's identity, client, model cache and resolver, engine,
    settings and counters, the uploader and the one reporter; ``spawn`` starts a background task
    the runner tracks (and waits for at shutdown)."""

    worker_id: str
    client: WorkerClient
    cache: ModelCache
    resolver: ModelResolver
    engine: Engine
    settings: WorkerSettings
    stats: WorkerStats
    reporter: Reporter
    uploader: Uploader
    spawn: Callable[[Awaitable[None]], None]
    nets: NetPool = field(default_factory=NetPool)
    """The upscaler and face nets loaded on this worker, shared by the kinds across jobs."""

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
        stats = self.stats
        started = time.monotonic()
        if stats.first_engine_start_at is None:
            stats.first_engine_start_at = started
        expected: tuple[type[Exception], ...] = (Interrupted, EngineError, ValidationError, *keep)
        try:
            return await asyncio.to_thread(call), None
        except expected as exc:
            return None, exc
        except Exception as exc:
            log.exception("job.engine_crashed job_id=%s work=%s", job.id, label)
            return None, EngineError(f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            ended = stats.last_engine_end_at = time.monotonic()
            busy = ended - started
            job.engine_seconds += busy
            job.timings[label] = busy
            stats.engine_busy_seconds += busy

    async def models_ready(self, job: HeldJob) -> dict[tuple[str, str], Path] | ModelUnavailable:
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


RunFactory = Callable[[RunContext, HeldJob], JobRun]
"""Makes the run of one held job; a job kind registers one (see :mod:`sdfleet.worker.runner`)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What a job kind that needs no generation engine offers on this worker: the kinds it runs here and the
    features it adds (``annotate_depth``: its modules with weights)."""

    kinds: tuple[str, ...]
    features: tuple[str, ...] = ()


@runtime_checkable
class OffersItself(Protocol):
    """A :data:`RunFactory` whose kind does not depend on the engine (annotate runs on OpenCV/onnxruntime):
    it says itself what it offers, and the worker registers that beside the engine's kinds."""

    def offer(self, settings: WorkerSettings) -> Offer: ...


__all__ = ["Finish", "JobRun", "Offer", "OffersItself", "RunContext", "RunFactory"]
