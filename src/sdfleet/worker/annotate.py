"""The annotate job kind (ControlNet preprocessors): :class:`AnnotateRun` reads the job's spec and its prefetched
image, waits for its annotator file (modules with weights), runs the module in a thread as the job's engine time
and — off the engine — uploads the control map as the job's one PNG and completes it
(:func:`~sdfleet.worker.deliver.deliver_images`).

:class:`AnnotateKind` is the kind's factory: it keeps this worker's ONNX sessions, and says what the kind offers
here (:class:`~sdfleet.worker.context.OffersItself`) — annotate whenever OpenCV is installed (the model-free
modules), and the depth modules' feature on workers that run modules with weights (role ``annotate``, or
``SDFLEET_WORKER_ANNOTATE_WEIGHTS=true``) where onnxruntime is installed.

:class:`AnnotatorHost` is the engine of an annotate-only worker (``sdfleet worker --role annotate``): it draws
nothing and offers no generation kind, so such a worker needs neither torch nor diffusers.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL.Image import Image

from sdfleet.config import WorkerSettings
from sdfleet.domain import Feature, GenerationSpec, JobKind, ModelKind
from sdfleet.engine.base import (
    EngineCapabilities,
    GeneratedImage,
    GenerationResult,
    OnStep,
    ShouldStop,
    open_input_image,
)
from sdfleet.errors import EngineError, ModelUnavailable, SdfleetError
from sdfleet.specs.annotate import WEIGHTED, AnnotateSpec
from sdfleet.worker.context import Finish, Offer, RunContext
from sdfleet.worker.deliver import deliver_images
from sdfleet.worker.held import HeldJob, Phase

if TYPE_CHECKING:
    from sdfleet.engine.annotate import OnnxSessions

log = logging.getLogger("sdfleet.worker")

__all__ = ["AnnotateKind", "AnnotateRun", "AnnotatorHost", "annotate_kinds"]


def _decode(value: str) -> bytes:
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SdfleetError(f"the fetched image is not base64: {exc}") from exc


def runs_weights(settings: WorkerSettings) -> bool:
    """Whether this worker takes annotate jobs of modules with weights (and can: onnxruntime)."""
    wanted = (
        settings.annotate_weights if settings.annotate_weights is not None else settings.role == "annotate"
    )
    return wanted and importlib.util.find_spec("onnxruntime") is not None


class AnnotateKind:
    """The :data:`~sdfleet.worker.context.RunFactory` of ``annotate`` jobs (one ONNX session cache per worker)."""

    def __init__(self) -> None:
        self._sessions: OnnxSessions | None = None

    @property
    def sessions(self) -> OnnxSessions:
        """The ONNX sessions loaded here (made on first use: OpenCV and numpy are imported only then)."""
        if self._sessions is None:
            from sdfleet.engine.annotate import OnnxSessions

            self._sessions = OnnxSessions()
        return self._sessions

    def __call__(self, ctx: RunContext, job: HeldJob) -> AnnotateRun:
        return AnnotateRun(ctx, job, self)

    def offer(self, settings: WorkerSettings) -> Offer:
        """Annotate where OpenCV is installed; the depth feature where modules with weights run here."""
        if importlib.util.find_spec("cv2") is None:
            return Offer(kinds=())
        features = sorted({a.feature for a in WEIGHTED.values()}) if runs_weights(settings) else []
        for name in features:
            Feature.from_names([name])  # every advertised feature is a known bit
        return Offer(kinds=(JobKind.ANNOTATE.value,), features=tuple(features))


def annotate_kinds() -> dict[str, AnnotateKind]:
    """The job-kind table of an annotate-only worker."""
    return {JobKind.ANNOTATE.value: AnnotateKind()}


class AnnotateRun:
    """One annotate job on this worker (a :class:`~sdfleet.worker.context.JobRun`)."""

    def __init__(self, ctx: RunContext, job: HeldJob, kind: AnnotateKind) -> None:
        self.ctx = ctx
        self.job = job
        self.kind = kind
        self.result: Image | None = None
        self.spec: AnnotateSpec | None = None

    async def _parse(self) -> tuple[AnnotateSpec, bytes] | str:
        job = self.job
        try:
            spec = AnnotateSpec.model_validate(job.claim.params)
            spec.entry  # noqa: B018 -- a module this worker does not know: the job cannot be read here
        except (ValueError, SdfleetError) as exc:  # pydantic's ValidationError is a ValueError
            return f"this worker cannot read the job: {exc}"
        if job.inputs is None:
            return f"this worker cannot read the job: no image to fetch for {spec.image[:60]!r}"
        try:
            fetched = await job.inputs
            return spec, _decode(fetched[spec.image])
        except (SdfleetError, KeyError) as exc:
            return f"retry: could not fetch the job's image: {exc}"

    async def execute(self) -> Finish | None:
        """Run the module on the job's image; returns :meth:`finish`, or None when the job was reported."""
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
        model: Path | None = models.get((ModelKind.ANNOTATOR.value, spec.model or ""))
        job.phase = Phase.RUNNING
        job.total = 1
        job.timings["wait"] = time.monotonic() - job.claimed_at
        log.info(
            "job.started job_id=%s epoch=%d kind=annotate module=%s res=%d",
            job.id,
            job.epoch,
            spec.module,
            spec.processor_res,
        )

        def work() -> Image:
            from sdfleet.engine.annotate import annotate

            picture = open_input_image(data, "params.image")
            made = annotate(spec, picture, model=model, sessions=self.kind.sessions)
            job.step = 1
            return made

        result, error = await ctx.run_engine(job, "annotate", work, keep=(ModelUnavailable,))
        if isinstance(error, ModelUnavailable):  # this worker cannot load the annotator: another may
            error = EngineError(f"annotator unavailable: {error}", retryable=error.retryable)
        report = reporter.after_run(job, error, "annotate")
        if report is not None:
            ctx.spawn(report)
            return None
        assert result is not None
        job.phase = Phase.FINISHING
        self.result, self.spec = result, spec
        return self.finish

    async def finish(self) -> None:
        """Upload the control map (or send it inline) and complete the job."""
        assert self.result is not None and self.spec is not None
        image = GeneratedImage(image=self.result, seed=-1, subseed=-1, infotext="")
        info: dict[str, str | int | float] = {
            "module": self.spec.module,
            "processor_res": self.spec.processor_res,
            "width": self.result.width,
            "height": self.result.height,
        }
        await deliver_images(self.ctx, self.job, [image], info)


class AnnotatorHost:
    """The engine of an annotate-only worker: it offers no generation kind (annotate is offered by
    :class:`AnnotateKind` itself), so the orchestrator never hands it a generation."""

    name = "annotator"

    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            kinds=(),
            archs=(),
            max_pixels=1 << 40,
            features=(),
            device="cpu",
            gpu_name="CPU (annotate only)",
            gpu_memory_mb=0,
        )

    def loaded_models(self) -> list[str]:
        return []

    def generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult:
        raise EngineError("an annotate-only worker generates no images", retryable=True)
