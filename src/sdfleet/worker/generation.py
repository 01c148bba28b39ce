"""The generation job kind (``txt2img``, ``img2img``): :class:`GenerationRun` reads the job's
spec (with its prefetched input images), waits for its models, runs the engine, and — in
:meth:`GenerationRun.finish`, off the engine — encodes, uploads and completes the job."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.base import GenerationResult, StepInfo
from sdfleet.errors import ModelUnavailable, SdfleetError
from sdfleet.worker.context import Finish, RunContext
from sdfleet.worker.held import HeldJob, Phase
from sdfleet.worker.outputs import CONTENT_TYPES, encode_all

log = logging.getLogger("sdfleet.worker")


def with_inputs(params: dict[str, Any], fetched: dict[str, str]) -> dict[str, Any]:
    """The job's params with ``blob:`` references replaced by the fetched images."""
    out = dict(params)
    if out.get("init_images"):
        out["init_images"] = [fetched.get(v, v) for v in out["init_images"]]
    if isinstance(out.get("mask"), str):
        out["mask"] = fetched.get(out["mask"], out["mask"])
    return out


class GenerationRun:
    """One generation job on this worker (a :class:`~sdfleet.worker.context.JobRun`)."""

    def __init__(self, ctx: RunContext, job: HeldJob) -> None:
        self.ctx = ctx
        self.job = job
        self.result: GenerationResult | None = None

    async def _parse(self) -> tuple[JobKind, GenerationSpec] | str:
        job = self.job
        params = job.claim.params
        if job.inputs is not None:
            try:
                params = with_inputs(params, await job.inputs)
            except SdfleetError as exc:
                return f"retry: could not fetch the job's input images: {exc}"
        try:
            return JobKind(job.claim.kind), GenerationSpec.model_validate(params)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return f"this worker cannot read the job: {exc}"

    async def execute(self) -> Finish | None:
        """Run the engine on the job. Returns :meth:`finish` when the result is ready, None when
        the job was reported (failed, canceled, released) or dropped — in the background, so the
        engine moves on to the next job meanwhile."""
        ctx, job = self.ctx, self.job
        reporter = ctx.reporter
        parsed = await self._parse()
        if isinstance(parsed, str):
            retry = parsed.startswith("retry: ")
            code = "input_unavailable" if retry else "invalid_params"
            ctx.spawn(reporter.fail(job, code, parsed.removeprefix("retry: "), retryable=retry))
            return None
        kind, spec = parsed
        models = await ctx.models_ready(job)
        if isinstance(models, ModelUnavailable):
            log.warning(
                "job.models_unavailable job_id=%s retryable=%s error=%s", job.id, models.retryable, models
            )
            ctx.spawn(reporter.fail(job, models.code, str(models), retryable=models.retryable))
            return None
        if job.should_stop():
            ctx.spawn(reporter.after_stop(job, None))
            return None
        ctx.resolver.use(models)
        ctx.cache.touch(job.pinned)
        job.phase = Phase.RUNNING
        job.total = spec.steps * spec.n_iter
        job.timings["wait"] = time.monotonic() - job.claimed_at
        log.info("job.started job_id=%s epoch=%d steps=%d", job.id, job.epoch, spec.steps)
        log.debug("job.prompt job_id=%s prompt=%r", job.id, spec.prompt)

        def on_step(info: StepInfo) -> None:
            job.step = info.step
            job.total = info.total

        result, error = await ctx.run_engine(
            job, "generate", lambda: ctx.engine.generate(kind, spec, on_step, job.should_stop)
        )
        report = reporter.after_run(job, error, "generate")
        if report is not None:
            ctx.spawn(report)
            return None
        assert result is not None
        job.phase = Phase.FINISHING
        self.result = result
        return self.finish

    async def finish(self) -> None:
        """Encode the images, upload them (or send them inline) and complete the job."""
        ctx, job, result = self.ctx, self.job, self.result
        assert result is not None
        uploader, reporter = ctx.uploader, ctx.reporter
        async with reporter.finishing(job):
            spec_format = str(job.claim.params.get("output_format", "png"))
            default_type = CONTENT_TYPES.get(spec_format, "image/png")
            quality = int(job.claim.params.get("output_quality", 95))
            targets = {t.index: t for t in job.claim.uploads}
            types = {t.index: t.content_type for t in job.claim.uploads}
            t0 = time.monotonic()
            outputs = await asyncio.to_thread(encode_all, result.images, types, default_type, quality)
            t1 = time.monotonic()
            job.timings["encode"] = t1 - t0
            items = await uploader.items(job, outputs, targets, inline=uploader.inline_allowed)
            job.timings["upload"] = time.monotonic() - t1
            if job.should_stop():
                await reporter.after_stop(job, None)
                return
            info = {k: v for k, v in result.info.items() if isinstance(v, str | int | float)}
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
                    "job.completed job_id=%s epoch=%d images=%d engine_seconds=%.3f status=%s",
                    job.id,
                    job.epoch,
                    len(items),
                    job.engine_seconds,
                    status,
                )


__all__ = ["GenerationRun", "with_inputs"]
