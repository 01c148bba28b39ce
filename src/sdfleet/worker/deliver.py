"""The tail every image-making job kind shares: encode the images, upload them (or send them inline),
complete the job — off the engine, in the kind's :data:`~sdfleet.worker.context.Finish` step."""

from __future__ import annotations

import asyncio
import logging
import time

from sdfleet.engine.base import GeneratedImage
from sdfleet.errors import SdfleetError
from sdfleet.worker.context import RunContext
from sdfleet.worker.held import HeldJob
from sdfleet.worker.outputs import CONTENT_TYPES, encode_all

log = logging.getLogger("sdfleet.worker")


async def deliver_images(
    ctx: RunContext, job: HeldJob, images: list[GeneratedImage], info: dict[str, str | int | float]
) -> None:
    """Encode ``images`` in the job's output format, upload them (inline when the server takes it; once it
    refuses inline data, by upload from then on) and complete the job with ``info``. Never raises for the
    job's own trouble: the reporter ends the job either way."""
    uploader, reporter = ctx.uploader, ctx.reporter
    async with reporter.finishing(job):
        spec_format = str(job.claim.params.get("output_format", "png"))
        default_type = CONTENT_TYPES.get(spec_format, "image/png")
        quality = int(job.claim.params.get("output_quality", 95))
        targets = {t.index: t for t in job.claim.uploads}
        types = {t.index: t.content_type for t in job.claim.uploads}
        t0 = time.monotonic()
        outputs = await asyncio.to_thread(encode_all, images, types, default_type, quality)
        t1 = time.monotonic()
        job.timings["encode"] = t1 - t0
        items = await uploader.items(job, outputs, targets, inline=uploader.inline_allowed)
        job.timings["upload"] = time.monotonic() - t1
        if job.should_stop():
            await reporter.after_stop(job, None)
            return
        try:
            status = await reporter.complete(job, items, {"info": info}, images=len(items))
        except SdfleetError as exc:
            if not (exc.field or "").startswith("outputs.data_b64") or not any(i.data_b64 for i in items):
                raise
            # this server takes no (or smaller) inline outputs: upload from now on
            log.warning("worker.inline_refused worker_id=%s error=%s", ctx.worker_id, exc)
            uploader.inline_allowed = False
            items = await uploader.items(job, outputs, targets, inline=False)
            status = await reporter.complete(job, items, {"info": info}, images=len(items))
        if status is not None:
            log.info(
                "job.completed job_id=%s epoch=%d kind=%s images=%d engine_seconds=%.3f status=%s",
                job.id,
                job.epoch,
                job.claim.kind,
                len(items),
                job.engine_seconds,
                status,
            )


__all__ = ["deliver_images"]
