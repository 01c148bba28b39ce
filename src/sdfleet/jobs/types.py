"""The job system's use-case types: what callers hand to :class:`sdfleet.jobs.service.JobService`
(requests, registrations, beats, completions) and what it answers (submissions, claims, beat
answers, completion results, recorded checkpoints). Plain dataclasses, no behaviour beyond
:func:`requirements_of`, the requirements a request implies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdfleet.domain import (
    Capabilities,
    EventType,
    Feature,
    GenerationSpec,
    Job,
    JobKind,
    Requirements,
    WorkerState,
)
from sdfleet.specs.annotate import AnnotateSpec, Annotator
from sdfleet.specs.sdupscale import SdUpscaleSpec
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.specs.upscale import UpscaleBatchSpec, UpscaleSpec

JobSpec = GenerationSpec | LoraTrainSpec | UpscaleSpec | SdUpscaleSpec | UpscaleBatchSpec | AnnotateSpec
"""The parameters of a job of any kind."""

Clock = Callable[[], float]
EventRow = tuple[str, str, EventType, dict[str, Any], float]
"""One event to insert: (job id, tenant, type, data, at)."""


@dataclass(slots=True)
class Child:
    """One child job a fan-out plan asks for (:mod:`sdfleet.jobs.fanout`); ``labels`` are added to the
    child's own (which parent, which number in its stage)."""

    kind: JobKind
    spec: JobSpec
    arch: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class JobRequest:
    """A validated request to run one job. ``first_stage``: child jobs that must succeed before the job itself
    runs (a generation whose ControlNet units need preprocessing: its annotate jobs) — the job is stored
    waiting, as their parent, and queued once they are done."""

    kind: JobKind
    spec: JobSpec
    priority: int = 0
    idempotency_key: str | None = None
    webhook_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    arch: str | None = None
    first_stage: list[Child] = field(default_factory=list)


@dataclass(slots=True)
class Submitted:
    """The job a request produced, and whether it is new (False: an idempotent resubmit)."""

    job: Job
    created: bool


@dataclass(slots=True)
class Registration:
    """What a worker tells about itself when it registers."""

    name: str
    capabilities: Capabilities
    gpu_name: str = ""
    gpu_memory_mb: int = 0
    price_per_hour: float = 0.0
    engine: str = ""
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Beat:
    """A worker's word on one job it holds."""

    job_id: str
    epoch: int
    step: int = 0
    total: int = 0
    info: dict[str, float] | None = None  # training: loss, it_per_s, eta_seconds


@dataclass(slots=True)
class BeatAnswer:
    """What the orchestrator answers for one job in a heartbeat: continue, cancel, or lost."""

    job_id: str
    epoch: int
    action: str


@dataclass(slots=True)
class OutputReport:
    """One output a worker has stored (``blob_key``) or sends inline (``data``)."""

    index: int
    content_type: str
    size: int
    blob_key: str
    seed: int | None = None
    infotext: str | None = None
    sha256: str | None = None


@dataclass(slots=True)
class Completion:
    """A worker's report that a job finished successfully."""

    job_id: str
    epoch: int
    outputs: list[OutputReport]
    engine_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CompletionResult:
    """``accepted`` (recorded now), ``duplicate`` (recorded before, by this same epoch) or ``stale``."""

    job_id: str
    status: str
    message: str = ""


@dataclass(slots=True)
class ClaimResult:
    """Jobs handed to a worker by one claim, with the lease they hold."""

    jobs: list[Job]
    lease_seconds: float
    worker_state: WorkerState


@dataclass(slots=True)
class CheckpointRecorded:
    """A checkpoint recorded on a job: the steps kept, the blob keys no longer kept (to delete)."""

    job: Job
    kept: list[int]
    dropped: list[str]


def requirements_of(kind: JobKind, spec: JobSpec, arch: str | None) -> Requirements:
    """What a worker must offer to take the job (training: the kind, the base model's architecture and
    resolution² × batch as pixels; upscale: the output's pixels, a GPU-class worker for heavy nets, the
    first upscaler model as the model to be warm for; annotate: the feature of a module with weights and its
    annotator file)."""
    if isinstance(spec, LoraTrainSpec):
        pixels = spec.resolution * spec.resolution * spec.batch_size
        return Requirements(kind=kind, arch=arch, pixels=pixels, features=Feature.NONE, model=spec.base_model)
    if isinstance(spec, UpscaleSpec):
        # pixels 0: upscalers run tile by tile, so a device's memory does not bound the output's size (the
        # edge's max_upscale_pixels does)
        features = Feature.GPU if spec.needs_gpu else Feature.NONE
        if spec.face_restorers:
            features |= Feature.FACES
        models = spec.model_names
        return Requirements(
            kind=kind, arch=None, pixels=0, features=features, model=models[0] if models else None
        )
    if isinstance(spec, SdUpscaleSpec):  # a parent: no worker takes it, its children say what they need
        return Requirements(
            kind=kind, arch=arch, pixels=0, features=Feature.NONE, model=spec.generation.model
        )
    if isinstance(spec, AnnotateSpec):  # a module with weights: workers that run it, warm for its file
        entry = spec.entry
        features = Feature.from_names([entry.feature]) if isinstance(entry, Annotator) else Feature.NONE
        return Requirements(kind=kind, arch=None, pixels=0, features=features, model=spec.model)
    if isinstance(spec, UpscaleBatchSpec):
        return Requirements(kind=kind, arch=None, pixels=0, features=Feature.NONE, model=None)
    return Requirements.for_spec(kind, spec, arch)
