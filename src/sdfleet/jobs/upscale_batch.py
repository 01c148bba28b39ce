"""The ``upscale_batch`` parent (A1111's ``extra-batch-images``) as a fan-out
:class:`~sdfleet.jobs.fanout.Plan`: one ``upscale`` child per picture, all queued at once so they spread over
the free workers; the parent's outputs are the children's, in order (the same blobs, not copies)."""

from __future__ import annotations

from collections.abc import Sequence

from sdfleet.blobs import BlobStore
from sdfleet.domain import Job, JobKind, Output
from sdfleet.jobs.fanout import Child, Final, FinalImage, first_output
from sdfleet.specs.upscale import UpscaleBatchSpec


class UpscaleBatchPlan:
    """The one stage of an ``upscale_batch`` parent."""

    def expected(self, parent: Job) -> int:
        return len(parent.spec.get("images") or ())

    def first(self, parent: Job) -> list[Child]:
        return [Child(JobKind.UPSCALE, spec) for spec in UpscaleBatchSpec.model_validate(parent.spec).images]

    async def next(
        self, parent: Job, children: Sequence[Job], outputs: dict[str, list[Output]], blobs: BlobStore
    ) -> list[Child] | Final:
        images = []
        notes: dict[str, str] = {}
        for index, child in enumerate(children):
            output = first_output(outputs, child)
            images.append(FinalImage(output.content_type, output.infotext, output.seed, output=output))
            info = child.result.get("info")
            for key, value in info.items() if isinstance(info, dict) else ():
                if key.startswith("note"):
                    notes[f"{index}.{key}"] = str(value)
        return Final(images, info={"images": len(images), **notes})


__all__ = ["UpscaleBatchPlan"]
