"""The job-kind registry: which :data:`~sdfleet.worker.context.RunFactory` runs which job kind.
A new kind (upscale, annotate, …) plugs in by adding its factory here (or passing
``Worker(kinds={**default_kinds(), "upscale": UpscaleRun})``), never by editing the runner."""

from __future__ import annotations

import importlib.util

from sdfleet.domain import JobKind
from sdfleet.worker.annotate import AnnotateKind
from sdfleet.worker.context import Finish, RunContext, RunFactory
from sdfleet.worker.generation import GenerationRun
from sdfleet.worker.held import HeldJob
from sdfleet.worker.training import TrainingRun
from sdfleet.worker.upscale import UpscaleKind


def default_kinds() -> dict[str, RunFactory]:
    """The job kinds this worker runs out of the box: generation, LoRA training, upscaling where torch
    is installed (the extras pipeline runs real nets whichever engine makes the pictures), and annotate (the
    ControlNet preprocessors: offered where OpenCV is installed, see :class:`AnnotateKind`)."""
    kinds: dict[str, RunFactory] = {
        JobKind.TXT2IMG.value: GenerationRun,
        JobKind.IMG2IMG.value: GenerationRun,
        JobKind.TRAIN_LORA.value: TrainingRun,
    }
    if importlib.util.find_spec("torch") is not None:
        kinds[JobKind.UPSCALE.value] = UpscaleKind()
    kinds[JobKind.ANNOTATE.value] = AnnotateKind()
    return kinds


class UnknownKind:
    """The run of a job whose kind no factory is registered for: fail it, not retried here."""

    def __init__(self, ctx: RunContext, job: HeldJob) -> None:
        self.ctx, self.job = ctx, job

    async def execute(self) -> Finish | None:
        message = f"this worker cannot read the job: no job kind {self.job.claim.kind!r}"
        self.ctx.spawn(self.ctx.reporter.fail(self.job, "invalid_params", message, retryable=False))
        return None


__all__ = ["UnknownKind", "default_kinds"]
