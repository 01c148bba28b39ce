"""The one place that ends a held job: :class:`Reporter` fails, releases, completes, drops (stale
or lost) and forgets jobs, and keeps the held-job table and the counters right while doing so.

Two ladders live here and nowhere else, shared by every job kind:

- :meth:`Reporter.after_run` — the error → report ladder after an engine run (stopped: lost →
  drop, canceled → fail ``canceled``, else release; ``Interrupted`` → retryable fail; input error
  → ``invalid_input``; engine error → fail with its code);
- :meth:`Reporter.complete` and :meth:`Reporter.finishing` — the completion tail (send
  ``complete``, stale → drop, count, forget) and the errors around it (stale lease → drop,
  unreachable → abandon, refused → retryable ``complete_rejected``, a bug → ``worker_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from sdfleet.config import WorkerSettings
from sdfleet.errors import EngineError, Interrupted, InvalidInput, SdfleetError, StaleLease, ValidationError
from sdfleet.models.cache import ModelCache
from sdfleet.wire import CompleteRequest, FailRequest, OutputItem, ReleaseRequest
from sdfleet.worker.client import Unreachable, WorkerClient
from sdfleet.worker.held import HeldJob, Phase, WorkerStats

log = logging.getLogger("sdfleet.worker")

DropReason = Literal["lost", "stale"]
Report = Coroutine[Any, Any, None]


class Reporter:
    """Ends held jobs for one registered worker (see the module docstring).

    ``held`` (by job id and lease epoch) and ``ready`` (claimed, not started) are the runner's
    tables, shared: a job leaves both here. ``beat_lock`` is held by the runner while a heartbeat
    is on its way; ``notify`` wakes the runner's loops.
    """

    def __init__(
        self,
        worker_id: str,
        client: WorkerClient,
        settings: WorkerSettings,
        stats: WorkerStats,
        cache: ModelCache,
        *,
        held: dict[tuple[str, int], HeldJob],
        ready: deque[HeldJob],
        beat_lock: asyncio.Lock,
        notify: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.client = client
        self.settings = settings
        self.stats = stats
        self.cache = cache
        self.held = held
        self.ready = ready
        self.beat_lock = beat_lock
        self.notify = notify

    # ------------------------------------------------------------------ the table
    def holds(self, job: HeldJob) -> bool:
        """Whether this worker still holds ``job`` (this very lease)."""
        return self.held.get((job.id, job.epoch)) is job

    def forget(self, job: HeldJob) -> None:
        """``job`` is reported: out of the table, its cache pins released."""
        if self.holds(job):
            del self.held[(job.id, job.epoch)]
        if job.pinned:
            self.cache.unpin(job.pinned)
            job.pinned = []

    def drop(self, job: HeldJob, why: DropReason, detail: str = "") -> None:
        """Forget ``job`` without a report: our lease is gone (``lost``) or was refused (``stale``)."""
        self.forget(job)
        with contextlib.suppress(ValueError):
            self.ready.remove(job)
        if why == "lost":
            self.stats.jobs_lost += 1
        else:
            self.stats.jobs_stale += 1
        log.warning("job.dropped job_id=%s epoch=%d reason=%s %s", job.id, job.epoch, why, detail)

    def mark_lost(self, job: HeldJob) -> None:
        """Our lease on ``job`` is gone: stop generating it, do not upload or complete it."""
        if job.lost:
            return
        job.lost = True
        if job.phase == Phase.WAITING and job in self.ready:
            self.drop(job, "lost")
            self.notify()
        else:
            log.warning("job.lost job_id=%s epoch=%d phase=%s", job.id, job.epoch, job.phase)

    async def unbeat(self, job: HeldJob) -> None:
        """Keep ``job`` out of heartbeats from now on, and let a heartbeat already on its way land
        first: a beat that reached the server after a release or retryable fail would take the
        re-queued job back for this worker (the same epoch is still ours)."""
        job.phase = Phase.REPORTING
        async with self.beat_lock:
            pass

    # ------------------------------------------------------------------ fail and release
    async def fail(
        self,
        job: HeldJob,
        code: str,
        message: str,
        *,
        retryable: bool,
        canceled: bool = False,
        field: str | None = None,
    ) -> None:
        """Report ``job`` failed (or canceled), then forget it."""
        await self.unbeat(job)
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
            self.drop(job, "stale", str(exc))
            return
        except SdfleetError as exc:
            log.error("job.fail_report_error job_id=%s error=%s", job.id, exc)
        self.forget(job)
        if canceled:
            self.stats.jobs_canceled += 1
            log.info("job.canceled job_id=%s epoch=%d", job.id, job.epoch)
        else:
            self.stats.jobs_failed += 1
            log.info("job.failed job_id=%s epoch=%d code=%s retryable=%s", job.id, job.epoch, code, retryable)

    async def fail_input(self, job: HeldJob, error: ValidationError) -> None:
        """Report that the job's input cannot be processed (``invalid_input``, naming the field): a
        user error, not retried and counted against no worker."""
        message = str(error)
        if error.field and not message.startswith(error.field):
            message = f"{error.field}: {message}"
        log.warning("job.invalid_input job_id=%s field=%s error=%s", job.id, error.field, message)
        await self.fail(job, InvalidInput.code, message, retryable=False, field=error.field)

    async def cancel(self, job: HeldJob) -> None:
        """Report ``job`` canceled by its client."""
        await self.fail(job, "canceled", "canceled by the client", retryable=False, canceled=True)

    async def release(self, job: HeldJob, reason: str) -> None:
        """Give ``job`` back (an interruption, not a failure), then forget it."""
        await self.unbeat(job)
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
            self.drop(job, "stale", str(exc))
            return
        except SdfleetError as exc:
            log.error("job.release_error job_id=%s error=%s", job.id, exc)
        self.forget(job)
        self.stats.jobs_released += 1
        log.info("job.released job_id=%s epoch=%d reason=%s", job.id, job.epoch, reason)

    async def after_stop(self, job: HeldJob, error: BaseException | None) -> None:
        """A job whose engine run was stopped (or skipped): lost, canceled or interrupted."""
        if job.lost:
            self.drop(job, "lost")
        elif job.cancel:
            await self.cancel(job)
        else:
            reason = "worker stopping" + (f" ({error})" if error is not None else "")
            await self.release(job, reason)

    # ------------------------------------------------------------------ the error → report ladder
    def after_run(self, job: HeldJob, error: BaseException | None, work: str) -> Report | None:
        """The report that ends ``job`` after an engine run (``work`` names it in logs), or None
        when the run succeeded and the job goes on to finish. The caller awaits the report, or
        spawns it so the engine can move on."""
        if job.should_stop():
            return self.after_stop(job, error)
        if isinstance(error, Interrupted):
            return self.fail(job, "interrupted", str(error), retryable=True)
        if isinstance(error, ValidationError):  # InvalidInput included: the input's fault, not ours
            return self.fail_input(job, error)
        if isinstance(error, EngineError):
            log.warning(
                "job.engine_error job_id=%s work=%s retryable=%s error=%s",
                job.id,
                work,
                error.retryable,
                error,
            )
            return self.fail(job, error.code, str(error), retryable=error.retryable)
        return None

    # ------------------------------------------------------------------ the completion tail
    async def complete(
        self, job: HeldJob, items: list[OutputItem], result: dict[str, Any], *, images: int = 0
    ) -> str | None:
        """Send ``job``'s completion; count and forget it. Returns the server's status, or None
        when the server called our lease stale (then the job is dropped). Errors of the call
        propagate (see :meth:`finishing`)."""
        answer = await self.client.complete(self.completion(job, items, result))
        status = answer.results[0].status if answer.results else "accepted"
        if status == "stale":
            self.drop(job, "stale", answer.results[0].message)
            return None
        self.stats.jobs_completed += 1
        self.stats.images += images
        self.stats.last_completed_at = time.monotonic()
        self.forget(job)
        return status

    def completion(self, job: HeldJob, items: list[OutputItem], result: dict[str, Any]) -> CompleteRequest:
        """The completion report of a held job: its outputs, engine time, timings and ``result``."""
        return CompleteRequest(
            worker_id=self.worker_id,
            job_id=job.id,
            epoch=job.epoch,
            outputs=items,
            engine_seconds=job.engine_seconds,
            timings={k: round(v, 4) for k, v in job.timings.items()},
            result=result,
        )

    @contextlib.asynccontextmanager
    async def finishing(self, job: HeldJob) -> AsyncIterator[None]:
        """Around uploading and completing ``job``: every error ends the job here, none escapes."""
        try:
            yield
        except StaleLease as exc:
            self.drop(job, "stale", str(exc))
        except Unreachable as exc:  # only when the client has a retry deadline or was closed
            log.error("job.abandoned job_id=%s error=%s", job.id, exc)
            self.forget(job)
        except SdfleetError as exc:
            log.error("job.complete_rejected job_id=%s error=%s", job.id, exc)
            await self.fail(
                job, "complete_rejected", f"the orchestrator refused the result: {exc}", retryable=True
            )
        except Exception as exc:
            log.exception("job.finish_crashed job_id=%s", job.id)
            await self.fail(job, "worker_error", f"{type(exc).__name__}: {exc}", retryable=True)


__all__ = ["DropReason", "Report", "Reporter"]
