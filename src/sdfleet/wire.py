"""The wire contract: request and response bodies of the native API and the worker protocol.

The orchestrator's routes and the worker's HTTP client both use these models, so they cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sdfleet.domain import GENERATION_KINDS, GenerationSpec, JobKind
from sdfleet.training.config import LoraTrainSpec

# ===================================================================== native jobs API


class JobCreate(BaseModel):
    """One job to run."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = JobKind.TXT2IMG
    params: GenerationSpec | LoraTrainSpec = Field(
        default_factory=GenerationSpec,
        description="A GenerationSpec (txt2img, img2img) or, for kind train_lora, a LoraTrainSpec",
    )
    priority: int = Field(default=0, ge=-100, le=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2000)
    labels: dict[str, str] = Field(default_factory=dict, max_length=1000)  # Limits.max_labels applies
    arch: Literal["sd1", "sd2", "sdxl"] | None = None

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_of_kind(
        cls, value: Any, handler: Any, info: ValidationInfo
    ) -> GenerationSpec | LoraTrainSpec:
        """The kind (declared before params) says which spec the params are, so errors name the
        fields of that one spec only."""
        if info.data.get("kind") == JobKind.TRAIN_LORA:
            return value if isinstance(value, LoraTrainSpec) else LoraTrainSpec.model_validate(value)
        return value if isinstance(value, GenerationSpec) else GenerationSpec.model_validate(value)

    @property
    def generation(self) -> GenerationSpec:
        """The params of a generation job (txt2img, img2img)."""
        if not isinstance(self.params, GenerationSpec):
            raise TypeError(f"a {self.kind.value} job has no generation spec")
        return self.params


class JobBatchCreate(BaseModel):
    """Several jobs submitted at once (all stored, or none)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1)


class OutputView(BaseModel):
    index: int
    url: str
    content_type: str
    size: int
    seed: int | None = None
    infotext: str | None = None


class ProgressView(BaseModel):
    step: int
    total: int
    fraction: float
    loss: float | None = None
    it_per_s: float | None = None
    eta_seconds: float | None = None


class CheckpointView(BaseModel):
    """One kept checkpoint of a training job."""

    step: int
    size: int
    created_at: float


class ErrorView(BaseModel):
    code: str | None
    message: str | None


class JobView(BaseModel):
    """A job as clients see it."""

    id: str
    kind: str
    state: str
    priority: int
    labels: dict[str, str]
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: ProgressView
    failures: int
    interruptions: int
    cancel_requested: bool
    wait_reason: str | None
    error: ErrorView | None
    outputs: list[OutputView]
    engine_seconds: float
    cost_usd: float
    result: dict[str, Any]
    idempotency_key: str | None = None
    created: bool | None = None
    checkpoints: list[CheckpointView] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class BatchView(BaseModel):
    jobs: list[JobView]
    created: int


class AccountView(BaseModel):
    tenant: str
    scopes: list[str]
    webhook_url: str | None
    webhook_secret: str
    usage: dict[str, Any]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)


# ===================================================================== worker protocol


class WorkerCapabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[str] = Field(default_factory=lambda: list(GENERATION_KINDS))
    archs: list[str] = Field(default_factory=lambda: ["sd1", "sd2", "sdxl"])
    max_pixels: int = Field(default=4 * 1024 * 1024, ge=64 * 64)
    features: list[str] = Field(default_factory=list)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    gpu_name: str = Field(default="", max_length=200)
    gpu_memory_mb: int = Field(default=0, ge=0)
    price_per_hour: float = Field(default=0.0, ge=0.0, le=1000.0)
    engine: str = Field(default="", max_length=64)
    version: str = Field(default="", max_length=64)
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    info: dict[str, Any] = Field(default_factory=dict)


class RegisterResponse(BaseModel):
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float
    max_inline_output_bytes: int = 0  # 0: inline outputs are not accepted (object-store profile)


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str
    max_jobs: int = Field(default=1, ge=1, le=256)
    wait: float = Field(default=0.0, ge=0.0, le=300.0)
    # the warm set: models in memory (as the engine names them: ``ckpt``, ``lora:name``, ``vae:name``)
    # and on disk (registry names); claims prefer jobs whose models are warm here. None: as before.
    loaded_models: list[str] | None = Field(default=None, max_length=1000)
    cached_models: list[str] | None = Field(default=None, max_length=10_000)


class UploadTarget(BaseModel):
    """Where to put one output: ``PUT url`` with the body (relative URLs are on the orchestrator)."""

    index: int
    key: str
    url: str
    method: str = "PUT"
    content_type: str


class ModelSource(BaseModel):
    """A registry model a claimed job names, as the worker needs it to fetch and verify the file.

    ``url`` is set when the orchestrator resolved the source for the worker (``s3://`` sources:
    a presigned GET URL); other sources (local path, ``http(s)://``, ``hf://``, ``civitai://``)
    the worker maps itself. ``problem`` says why the orchestrator could not resolve it."""

    name: str
    kind: str
    arch: str | None = None
    source: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    problem: str | None = None


class ModelUrlRequest(BaseModel):
    """Ask again for a model's download URL (a presigned one that expired)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    name: str = Field(min_length=1, max_length=200)


class ResumeCheckpoint(BaseModel):
    """The latest checkpoint of a training job handed out again: continue from ``step``."""

    step: int
    key: str
    url: str
    size: int | None = None
    sha256: str | None = None


class ClaimedJob(BaseModel):
    job_id: str
    epoch: int
    kind: str
    params: dict[str, Any]
    lease_expires_at: float | None
    uploads: list[UploadTarget]
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Input reference in params (``blob:…``) → a signed URL to GET it"
    )
    models: list[ModelSource] = Field(
        default_factory=list, description="Registry models the job names, to fetch before it runs"
    )
    resume: ResumeCheckpoint | None = Field(
        default=None, description="Training jobs: the checkpoint to resume from (None: start at step 0)"
    )


class ClaimResponse(BaseModel):
    jobs: list[ClaimedJob]
    worker_state: str
    lease_seconds: float
    message: str | None = None


class BeatItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    epoch: int
    step: int = Field(default=0, ge=0)
    total: int = Field(default=0, ge=0)
    # training progress (None: not reported)
    loss: float | None = None
    it_per_s: float | None = Field(default=None, ge=0.0)
    eta_seconds: float | None = Field(default=None, ge=0.0)


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str
    jobs: list[BeatItem] = Field(default_factory=list, max_length=256)
    loaded_models: list[str] | None = Field(default=None, max_length=1000)
    cached_models: list[str] | None = Field(default=None, max_length=10_000)


class BeatAnswerView(BaseModel):
    """The answer for one (job, epoch) of a heartbeat, in the order of the beats."""

    job_id: str
    epoch: int = 0
    action: Literal["continue", "cancel", "lost"]


class HeartbeatResponse(BaseModel):
    jobs: list[BeatAnswerView]
    worker_state: str
    lease_seconds: float


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str
    job_id: str
    epoch: int
    index: int = Field(ge=0)
    content_type: str = "image/png"


class OutputItem(BaseModel):
    """One output: stored at ``key`` beforehand, or sent inline as ``data_b64`` (small ones, local
    blob store only)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    key: str | None = None
    data_b64: str | None = None
    content_type: str = "image/png"
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, max_length=64)
    seed: int | None = None
    infotext: str | None = Field(default=None, max_length=65536)


class CompleteItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    epoch: int
    outputs: list[OutputItem] = Field(default_factory=list)
    engine_seconds: float = Field(default=0.0, ge=0.0)
    timings: dict[str, float] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)


class CompleteRequest(BaseModel):
    """Either one completion (``job_id`` …) or several (``results``)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    job_id: str | None = None
    epoch: int | None = None
    outputs: list[OutputItem] = Field(default_factory=list)
    engine_seconds: float = Field(default=0.0, ge=0.0)
    timings: dict[str, float] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    results: list[CompleteItem] | None = Field(default=None, max_length=256)


class CompleteResultView(BaseModel):
    job_id: str
    status: Literal["accepted", "duplicate", "stale"]
    message: str = ""


class CompleteResponse(BaseModel):
    results: list[CompleteResultView]


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str
    job_id: str
    epoch: int
    code: str = Field(default="engine_error", max_length=64)
    message: str = Field(default="", max_length=4000)
    retryable: bool = True
    engine_seconds: float = Field(default=0.0, ge=0.0)


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str
    job_id: str
    epoch: int
    reason: str = Field(default="worker stopping", max_length=2000)
    engine_seconds: float = Field(default=0.0, ge=0.0)


class CheckpointUploadRequest(BaseModel):
    """Where to store a training checkpoint (a job this worker holds)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    epoch: int
    step: int = Field(ge=1)


class CheckpointReport(BaseModel):
    """A training checkpoint stored at ``key`` (from :class:`CheckpointUploadRequest`): record it on the
    job (fenced by the lease epoch)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    epoch: int
    step: int = Field(ge=1)
    key: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0)
    sha256: str | None = Field(default=None, max_length=64)


class CheckpointAnswer(BaseModel):
    job_id: str
    step: int
    kept: list[int]
    deleted: int


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str


class JobStateView(BaseModel):
    job_id: str
    state: str


# ===================================================================== fleet demand (operators, autoscalers)


class ModelDemandView(BaseModel):
    """One model's demand and supply: jobs that need it, workers that hold it warm."""

    name: str
    kind: str | None = Field(description="Registry kind (checkpoint, lora, vae, …); None if not registered")
    queued: int = Field(description="Queued jobs that use the model")
    running: int = Field(description="Running jobs that use the model")
    workers_loaded: int = Field(description="Live workers holding it in memory")
    workers_cached: int = Field(description="Live workers holding it on disk only")
    queued_wait_avg_seconds: float | None = Field(description="Mean time the queued jobs have waited so far")
    queued_wait_max_seconds: float | None = Field(description="How long the oldest queued job has waited")
    recent_wait_avg_seconds: float | None = Field(
        description="Mean queue wait of the jobs first handed out within the recent window"
    )
    recent_jobs: int = Field(description="Jobs in that mean")


class FleetModelsView(BaseModel):
    """``GET /v1/fleet/models``: per model, most queued first."""

    models: list[ModelDemandView]
    workers_online: int
    recent_window_seconds: float
    affinity_max_wait_seconds: float
    generated_at: float
