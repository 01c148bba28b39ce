"""The upscale job kind (A1111's Extras): :class:`UpscaleRun` reads the job's spec and its prefetched image,
waits for its upscaler (and face restorer) files, runs the extras pipeline on the engine's device, and —
off the engine — encodes, uploads and completes the job (:func:`~sdfleet.worker.deliver.deliver_images`).

:class:`UpscaleKind` is the kind's factory: it keeps this worker's loaded nets (a small LRU), so a
stream of jobs naming the same upscaler loads it once."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from pathlib import Path
from typing import Any

from PIL.Image import Image

from sdfleet.domain import ModelKind
from sdfleet.engine.base import GeneratedImage, open_input_image
from sdfleet.engine.pool import NetPool
from sdfleet.engine.upscale.extras import ExtrasResult, run_extras
from sdfleet.errors import ModelUnavailable, SdfleetError
from sdfleet.specs.upscale import UpscaleSpec
from sdfleet.worker.context import Finish, RunContext
from sdfleet.worker.deliver import deliver_images
from sdfleet.worker.held import HeldJob, Phase

log = logging.getLogger("sdfleet.worker")


class UpscaleKind:
    """The :data:`~sdfleet.worker.context.RunFactory` of ``upscale`` jobs, holding the nets loaded on this
    worker (at most ``keep`` of them) across jobs."""

    def __init__(self, keep: int = 2) -> None:
        self.pool = NetPool(keep=keep)

    def __call__(self, ctx: RunContext, job: HeldJob) -> UpscaleRun:
        return UpscaleRun(ctx, job, self.pool)


def _decode(value: str) -> bytes:
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SdfleetError(f"the fetched image is not base64: {exc}") from exc


class UpscaleRun:
    """One upscale job on this worker (a :class:`~sdfleet.worker.context.JobRun`)."""

    def __init__(self, ctx: RunContext, job: HeldJob, pool: NetPool) -> None:
        self.ctx = ctx
        self.job = job
        self.pool = pool
        self.result: ExtrasResult | None = None

    async def _parse(self) -> tuple[UpscaleSpec, bytes] | str:
        job = self.job
        try:
            spec = UpscaleSpec.model_validate(job.claim.params)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return f"this worker cannot read the job: {exc}"
        if job.inputs is None:
            return f"this worker cannot read the job: no image to fetch for {spec.image[:60]!r}"
        try:
            fetched = await job.inputs
            return spec, _decode(fetched[spec.image])
        except (SdfleetError, KeyError) as exc:
            return f"retry: could not fetch the job's image: {exc}"

    async def execute(self) -> Finish | None:
        """Run the extras pipeline on the job's image; returns :meth:`finish`, or None when the job was
        reported (failed, canceled, released)."""
        ctx, job = self.ctx, self.job
        reporter = ctx.reporter
        parsed = await self._parse()
        if isinstance(parsed, str):
            retry = parsed.startswith("retry: ")
            code = "input_unavailable" if retry else "invalid_params"
            ctx.spawn(reporter.fail(job, code, parsed.removeprefix("retry: "), retryable=retry))
            return None
        spec, data = parsed
        models = await ctx.models_ready(job)
        if isinstance(models, ModelUnavailable):
            log.warning("job.models_unavailable job_id=%s error=%s", job.id, models)
            ctx.spawn(reporter.fail(job, models.code, str(models), retryable=models.retryable))
            return None
        if job.should_stop():
            ctx.spawn(reporter.after_stop(job, None))
            return None
        ctx.cache.touch(job.pinned)
        upscalers = _paths(models, ModelKind.UPSCALER)
        restorers = _paths(models, ModelKind.FACE_RESTORER)
        detectors = _paths(models, ModelKind.FACE_DETECTOR)
        device = ctx.engine.capabilities().device
        job.phase = Phase.RUNNING
        job.total = 1
        job.timings["wait"] = time.monotonic() - job.claimed_at
        log.info(
            "job.started job_id=%s epoch=%d kind=upscale upscaler=%s size=%dx%d",
            job.id,
            job.epoch,
            spec.upscaler_1,
            spec.input_width,
            spec.input_height,
        )

        def on_progress(done: int, total: int) -> None:
            job.step, job.total = done, total

        def work() -> ExtrasResult:
            image: Image = open_input_image(data, "image", max(spec.input_width * spec.input_height, 1))
            return run_extras(
                image,
                spec,
                upscalers=upscalers,
                restorers=restorers,
                pool=self.pool,
                device=device,
                detector=detectors.get(spec.face_detector) if spec.face_detector else None,
                tile=ctx.settings.upscale_tile,
                should_stop=job.should_stop,
                on_progress=on_progress,
            )

        result, error = await ctx.run_engine(job, "upscale", work)
        report = reporter.after_run(job, error, "upscale")
        if report is not None:
            ctx.spawn(report)
            return None
        assert result is not None
        job.phase = Phase.FINISHING
        self.result = result
        return self.finish

    async def finish(self) -> None:
        """Encode the image, upload it (or send it inline) and complete the job."""
        result = self.result
        assert result is not None
        image = GeneratedImage(image=result.image, seed=-1, subseed=-1, infotext=result.infotext)
        await deliver_images(self.ctx, self.job, [image], _scalars(result.info))


def _paths(models: dict[tuple[str, str], Path], kind: ModelKind) -> dict[str, Path]:
    return {name: path for (k, name), path in models.items() if k == kind.value}


def _scalars(info: dict[str, Any]) -> dict[str, str | int | float]:
    return {k: v for k, v in info.items() if isinstance(v, str | int | float)}


__all__ = ["UpscaleKind", "UpscaleRun"]
