"""Calls that answer when their jobs are done (the A1111 API: txt2img, img2img, extras): wait for the jobs
to end, cancel them when the client hangs up or the request runs past ``a1111_request_timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence

from fastapi import Request

from sdfleet.api.deps import AppContext
from sdfleet.domain import Job, JobState
from sdfleet.errors import EngineError, RequestTimeout, ServiceUnavailable, ValidationError
from sdfleet.jobs.policy import INVALID_INPUT

log = logging.getLogger("sdfleet.a1111")

CLIENT_GONE_STATUS = 499
"""What a call answers when its client went away before the jobs ended (nginx's "client closed request")."""

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)*): ")


def raise_failure(job: Job, kind: str, input_field: str | None = None) -> None:
    """The one answer to a job that did not succeed, for every call that waits on jobs: a canceled
    job and an expired one are 503; a job that failed on its input (``invalid_input``: what the worker
    could not process because of what was sent) is a 422 naming the field the worker named, else
    ``input_field``; any other failure the engine's error (500)."""
    if job.state == JobState.SUCCEEDED:
        return
    if job.state == JobState.CANCELED:
        raise ServiceUnavailable(f"job {job.id} was canceled")
    message = job.error_message or "the job failed"
    log.warning("%s.failed job_id=%s code=%s", kind, job.id, job.error_code)
    if job.error_code == "expired":
        raise ServiceUnavailable(message)
    if job.error_code in ("invalid_params", INVALID_INPUT):
        named = _FIELD_PREFIX.match(message)
        raise ValidationError(message, field=named.group(1) if named else input_field)
    raise EngineError(message, retryable=False)


async def wait_for_jobs(
    ctx: AppContext, request: Request, job_ids: Sequence[str], tenant: str
) -> list[Job] | None:
    """Wait until every job ends and return them in order; None when the client went away (the jobs are
    then canceled). Past ``a1111_request_timeout`` the jobs are canceled and the call answers 504."""
    timeout = ctx.settings.a1111_request_timeout
    deadline = time.monotonic() + timeout
    poll = max(0.05, ctx.settings.poll_seconds)
    gone = asyncio.ensure_future(_disconnected(request))
    done: dict[str, Job] = {}
    try:
        while True:
            for job_id in job_ids:
                if job_id not in done:
                    job = await ctx.jobs.get_job(job_id, tenant)
                    if job.state.terminal:
                        done[job_id] = job
            waiting = [j for j in job_ids if j not in done]
            if not waiting:
                return [done[j] for j in job_ids]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await _cancel_all(ctx, waiting, tenant)
                log.warning("a1111.timeout job_id=%s jobs=%d seconds=%.1f", waiting[0], len(waiting), timeout)
                raise RequestTimeout(
                    f"the job did not finish within {timeout:g} seconds and was canceled", field="job_id"
                )
            news = asyncio.ensure_future(ctx.notifier.wait_for_job(waiting[0], min(poll, remaining)))
            await asyncio.wait({news, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                await cancel_quietly(news)
                await _cancel_all(ctx, waiting, tenant)
                log.info("a1111.client_gone job_id=%s jobs=%d", waiting[0], len(waiting))
                return None
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(_cancel_all(ctx, [j for j in job_ids if j not in done], tenant))
        raise
    finally:
        await cancel_quietly(gone)


async def _cancel_all(ctx: AppContext, job_ids: Sequence[str], tenant: str) -> None:
    for job_id in job_ids:
        await ctx.jobs.cancel(job_id, tenant)


async def _disconnected(request: Request) -> None:
    """Return when the client hangs up. The body has been read by now, so the next ASGI message is the
    disconnect (the server holds it back until then): no polling."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_quietly(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` (if not done) and wait for it to end."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["CLIENT_GONE_STATUS", "cancel_quietly", "wait_for_jobs"]
