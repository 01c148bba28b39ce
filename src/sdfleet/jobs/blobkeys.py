"""The one spelling of the job system's blob keys and content types.

A per-attempt key names the tenant, the job and the lease epoch, so a zombie's upload never
overwrites the accepted one: ``outputs/<tenant>/<job>/<epoch>-<index>.<ext>`` and
``checkpoints/<tenant>/<job>/<epoch>-<step>.safetensors``. The routes that sign uploads, the
completion check and the training records all build and parse keys here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdfleet.domain import Job
from sdfleet.errors import ValidationError
from sdfleet.jobs.types import Completion
from sdfleet.wire import LORA_CONTENT_TYPE

OUTPUT_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    LORA_CONTENT_TYPE: "safetensors",
}
"""The file extension of each output content type a worker may upload (anything else: ``bin``)."""


def output_key(job: Job, epoch: int, index: int, content_type: str) -> str:
    """The blob key of one output. The epoch is part of it, so a zombie's upload never overwrites
    the accepted one."""
    ext = OUTPUT_EXTENSIONS.get(content_type, "bin")
    return f"outputs/{job.tenant}/{job.id}/{epoch}-{index}.{ext}"


def checkpoint_key(job: Job, epoch: int, step: int) -> str:
    """The blob key of one training checkpoint (the epoch in it: a zombie never overwrites a newer one)."""
    return f"checkpoints/{job.tenant}/{job.id}/{epoch}-{step:08d}.safetensors"


def check_outputs(job: Job, c: Completion) -> None:
    """Each output of a completion once, each at its own per-attempt key."""
    seen: set[int] = set()
    for o in c.outputs:
        if o.index in seen:
            raise ValidationError(f"output index {o.index} appears twice", field="outputs")
        seen.add(o.index)
        expected = output_key(job, c.epoch, o.index, o.content_type)
        if o.blob_key != expected:
            raise ValidationError(f"output {o.index} must be stored at {expected!r}", field="outputs")


@dataclass(frozen=True, slots=True)
class AttemptKey:
    """A blob key that belongs to one attempt of one job: ``outputs/<tenant>/<job>/<epoch>-<index>.<ext>``
    or ``checkpoints/<tenant>/<job>/<epoch>-<step>.safetensors``."""

    kind: str  # "outputs" | "checkpoints"
    tenant: str
    job_id: str
    epoch: int
    number: int  # output index or checkpoint step


_ATTEMPT_KEY = re.compile(
    r"^(?P<kind>outputs|checkpoints)/(?P<tenant>[^/]+)/(?P<job>[^/]+)/(?P<epoch>\d{1,18})-(?P<n>\d{1,18})\.[a-z0-9]{1,16}$"
)


def attempt_key(key: str) -> AttemptKey | None:
    """Parse a per-attempt blob key (None: not one)."""
    m = _ATTEMPT_KEY.match(key)
    if m is None:
        return None
    return AttemptKey(m["kind"], m["tenant"], m["job"], int(m["epoch"]), int(m["n"]))


__all__ = [
    "LORA_CONTENT_TYPE",
    "OUTPUT_EXTENSIONS",
    "AttemptKey",
    "attempt_key",
    "check_outputs",
    "checkpoint_key",
    "output_key",
]
