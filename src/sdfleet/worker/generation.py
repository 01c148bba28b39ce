"""The generation job kind (``txt2img``, ``img2img``): :class:`GenerationRun` reads the job's
spec (with its prefetched input images), waits for its models, runs the engine, and — in
:meth:`GenerationRun.finish`, off the engine — encodes, uploads and completes the job."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sdfleet.domain import GenerationSpec, JobKind, ModelKind
from sdfleet.engine.base import GeneratedImage, GenerationResult, StepInfo
from sdfleet.errors import EngineError, ModelUnavailable, SdfleetError
from sdfleet.worker.context import Finish, RunContext
from sdfleet.worker.deliver import deliver_images
from sdfleet.worker.held import HeldJob, Phase

log = logging.getLogger("sdfleet.worker")


def with_inputs(params: dict[str, Any], fetched: dict[str, str]) -> dict[str, Any]:
    """The job's params with ``blob:`` references replaced by the fetched images."""
    out = dict(params)
    if out.get("init_images"):
        out["init_images"] = [fetched.get(v, v) for v in out["init_images"]]
    if isinstance(out.get("mask"), str):
        out["mask"] = fetched.get(out["mask"], out["mask"])
    if out.get("controlnet"):
        keys = ("image", "mask", "effective_region_mask")
        out["controlnet"] = [
            {**u, **{k: fetched.get(u[k], u[k]) for k in keys if isinstance(u.get(k), str)}}
            for u in out["controlnet"]
        ]
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
        if report is None and result is not None and spec.restore_faces:
            result, error = await self._restore_faces(spec, models, result)
            report = reporter.after_run(job, error, "restore faces")
        if report is not None:
            ctx.spawn(report)
            return None
        assert result is not None
        job.phase = Phase.FINISHING
        self.result = result
        return self.finish

    async def _restore_faces(
        self, spec: GenerationSpec, models: dict[tuple[str, str], Path], result: GenerationResult
    ) -> tuple[GenerationResult | None, BaseException | None]:
        """``restore_faces``: the images' faces restored on the engine's device by the job's restorer (none
        registered: the images as they are, and a note saying so)."""
        path = models.get((ModelKind.FACE_RESTORER.value, spec.face_restorer or ""))
        if path is None:
            result.info["note_faces"] = (
                "restore_faces: no face restorer is registered (sdfleet models add NAME FILE --kind "
                "face_restorer); faces were not restored"
            )
            return result, None
        from sdfleet.engine.faces.extras import restore_generated

        detectors = [p for (kind, _), p in sorted(models.items()) if kind == ModelKind.FACE_DETECTOR.value]
        ctx, job = self.ctx, self.job

        def work() -> GenerationResult:
            images, faces = restore_generated(
                result.images,
                path,
                pool=ctx.nets,
                device=ctx.engine.capabilities().device,
                weight=spec.face_restorer_weight,
                detector=detectors[0] if detectors else None,
                should_stop=job.should_stop,
            )
            return GenerationResult(
                images=images, info={**result.info, "faces": faces}, detected_maps=result.detected_maps
            )

        restored, error = await ctx.run_engine(job, "restore faces", work, keep=(ModelUnavailable,))
        if isinstance(error, ModelUnavailable):  # this worker cannot load the restorer: another may
            error = EngineError(f"face restorer unavailable: {error}", retryable=error.retryable)
        return restored, error

    async def finish(self) -> None:
        """Encode the images, upload them (or send them inline) and complete the job."""
        assert self.result is not None
        info = {k: v for k, v in self.result.info.items() if isinstance(v, str | int | float)}
        # the detected maps after the pictures (the outputs the orchestrator expects past batch × n_iter)
        maps = [GeneratedImage(image=m, seed=-1, subseed=-1, infotext="") for m in self.result.detected_maps]
        if maps:
            info["detected_maps"] = len(maps)
        await deliver_images(self.ctx, self.job, [*self.result.images, *maps], info)


__all__ = ["GenerationRun", "with_inputs"]
