"""The job-kind registry: which :data:`~sdfleet.worker.context.RunFactory` runs which job kind.
A new kind (upscale, annotate, …) plugs in by adding its factory here (or passing
``Worker(kinds={**default_kinds(), "upscale": UpscaleRun})``), never by editing the runner."""

from __future__ import annotations

from sdfleet.domain import JobKind
from sdfleet.worker.context import Finish, RunContext, RunFactory
from sdfleet.worker.generation import GenerationRun
from sdfleet.worker.held import HeldJob
from sdfleet.worker.training import TrainingRun


def default_kinds() -> dict[str, RunFactory]:
    """The job kinds this worker runs out of the box: generation and LoRA training."""
    return {
        JobKind.TXT2IMG.value: GenerationRun,
        JobKind.IMG2IMG.value: GenerationRun,
        JobKind.TRAIN_LORA.value: TrainingRun,
    }


class UnknownKind:
    """The run of a job whose kind no factory is registered for: fail it, not retried here."""

    def __init__(self, ctx: RunContext, job: HeldJob) -> None:
        self.ctx, self.job = ctx, job

    async def execute(self) -> Finish | None:
        message = f"this worker cannot read the job: no job kind {self.job.claim.kind!r}"
        self.ctx.spawn(self.ctx.reporter.fail(self.job, "invalid_params", message, retryable=False))
        return None


__all__ = ["UnknownKind", "default_kinds"]
