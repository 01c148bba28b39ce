"""The wire contract: request and response bodies of the native API and the worker protocol.

The orchestrator's routes and the worker's HTTP client both use these models, so they cannot drift.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from sdfleet.domain import GENERATION_KINDS, GenerationSpec, JobKind
from sdfleet.specs.annotate import AnnotateSpec
from sdfleet.specs.sdupscale import SdUpscaleSpec
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.specs.upscale import UpscaleBatchSpec, UpscaleSpec
from sdfleet.validation import body_is_checked

# ===================================================================== native jobs API


class JobCreate(BaseModel):
    """One job to run."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = JobKind.TXT2IMG
    params: GenerationSpec | LoraTrainSpec | UpscaleSpec | SdUpscaleSpec | UpscaleBatchSpec | AnnotateSpec = (
        Field(
            default_factory=GenerationSpec,
            description="A GenerationSpec (txt2img, img2img); for kind train_lora a LoraTrainSpec; for kind "
            "upscale an UpscaleSpec; for kind sd_upscale an SdUpscaleSpec; for kind upscale_batch an UpscaleBatchSpec; "
            "for kind annotate an AnnotateSpec",
        )
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
    ) -> GenerationSpec | LoraTrainSpec | UpscaleSpec | SdUpscaleSpec | UpscaleBatchSpec | AnnotateSpec:
        """The kind (declared before params) says which spec the params are, so errors name the
        fields of that one spec only."""
        if info.data.get("kind") == JobKind.TRAIN_LORA:
            return value if isinstance(value, LoraTrainSpec) else LoraTrainSpec.model_validate(value)
        if info.data.get("kind") == JobKind.UPSCALE:
            return value if isinstance(value, UpscaleSpec) else UpscaleSpec.model_validate(value)
        if info.data.get("kind") == JobKind.UPSCALE_BATCH:
            return value if isinstance(value, UpscaleBatchSpec) else UpscaleBatchSpec.model_validate(value)
        if info.data.get("kind") == JobKind.ANNOTATE:
            return value if isinstance(value, AnnotateSpec) else AnnotateSpec.model_validate(value)
        if info.data.get("kind") == JobKind.SD_UPSCALE:
            return value if isinstance(value, SdUpscaleSpec) else SdUpscaleSpec.model_validate(value)
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
    detected_map: bool = False
    """A ControlNet unit's control map, returned after the generated images (not one of them)."""


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
    parent_id: str | None = Field(default=None, description="The parent job this one is a child of")
    stage: int = Field(default=0, description="A parent's current stage of child jobs")


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
    quota: dict[str, Any] | None = None  # limits and what is left of them (jobs.quotas.quota_view)


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)


# ===================================================================== worker protocol
#
# Numbers and strings from workers are bounded like those from users: integers fit the columns
# they land in, seconds are finite and at most a month per attempt, text is valid UTF-8 (no lone
# surrogates, no NULs) and free-form maps are small, shallow JSON. Anything else is a 422 naming the
# field — except error text, which is clamped (a failure report must always land).

LORA_CONTENT_TYPE = "application/vnd.safetensors"
"""The content type of a trained LoRA a worker uploads (and the orchestrator checks before registering)."""

EXIF_IFD = 0x8769
"""The EXIF sub-IFD that holds ``UserComment``."""

EXIF_USER_COMMENT = 0x9286
"""The EXIF ``UserComment`` tag: a JPEG or WebP output's infotext (``UNICODE\\0`` + UTF-16-BE), as A1111 writes it."""

INT32 = 2**31 - 1  # lease epochs, steps, counts: INTEGER columns
INT63 = 2**63 - 1  # sizes: BIGINT columns
MAX_SEED = 2**53  # output seeds (BIGINT, and exact in JSON)
MAX_ATTEMPT_SECONDS = 30 * 86400.0  # engine time one attempt may report
MAX_ERROR_TEXT = 4000  # error messages and release reasons are clamped to this
MAX_MAP_BYTES = 16 * 1024  # free-form maps (register info, completion result) as JSON
MAX_MAP_DEPTH = 8

Epoch = Annotated[int, Field(ge=0, le=INT32)]
Count = Annotated[int, Field(ge=0, le=INT32)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_ATTEMPT_SECONDS, allow_inf_nan=False)]
WireId = Annotated[str, Field(min_length=1, max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=500)]


def _check_value(value: Any, depth: int = 0) -> None:
    """Valid text and finite numbers all the way down (maps and lists from workers)."""
    if depth > MAX_MAP_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_MAP_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid UTF-8 text (no lone surrogates)") from None
    elif isinstance(value, bool):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
    elif isinstance(value, int):
        if not -INT63 - 1 <= value <= INT63:
            raise ValueError("is outside the 64-bit integer range")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_value(k, depth + 1)
            _check_value(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_value(v, depth + 1)


class WorkerBody(BaseModel):
    """Base of the worker protocol's request bodies: unknown fields, NaN/Infinity, invalid text and
    out-of-range numbers are refused, naming the field.

    The walk of every value is skipped inside :func:`sdfleet.validation.body_checked`: on the
    orchestrator, ``CheckedRoute`` has already walked the whole decoded body with the same rules (and
    named the field), so a worker request is checked once. Built anywhere else (the worker's client,
    tests), a body walks its values itself."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_everywhere(cls, value: Any) -> Any:
        if not isinstance(value, BaseModel) and not body_is_checked():
            _check_value(value)
        return value


def _small_map(value: dict[str, Any]) -> dict[str, Any]:
    _check_value(value)
    if len(json.dumps(value, separators=(",", ":"))) > MAX_MAP_BYTES:
        raise ValueError(f"must be at most {MAX_MAP_BYTES} bytes as JSON")
    return value


def _clamp_text(value: Any) -> Any:
    """Error text is clamped, not refused: a failure report must land whatever the engine said."""
    if isinstance(value, str):
        value = value[:MAX_ERROR_TEXT].replace("\x00", "")
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _finite_or_none(value: Any) -> Any:
    """Training progress that is not a number (a diverged loss) is reported as unknown, not refused."""
    if isinstance(value, float | int) and not isinstance(value, bool) and not math.isfinite(value):
        return None
    return value


SmallMap = Annotated[dict[str, Any], AfterValidator(_small_map)]
ErrorText = Annotated[str, BeforeValidator(_clamp_text), Field(max_length=MAX_ERROR_TEXT)]
Progress = Annotated[Annotated[float, Field(ge=0.0, le=1e12)] | None, BeforeValidator(_finite_or_none)]
Timings = Annotated[dict[Annotated[str, Field(max_length=64)], Seconds], Field(max_length=64)]


class WorkerCapabilities(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: list(GENERATION_KINDS), max_length=32
    )
    archs: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: ["sd1", "sd2", "sdxl"], max_length=32
    )
    max_pixels: int = Field(default=4 * 1024 * 1024, ge=64 * 64, le=2**40)
    features: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)


class RegisterRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    gpu_name: str = Field(default="", max_length=200)
    gpu_memory_mb: Count = 0
    price_per_hour: float = Field(default=0.0, ge=0.0, le=1000.0)
    engine: str = Field(default="", max_length=64)
    version: str = Field(default="", max_length=64)
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    info: SmallMap = Field(default_factory=dict)


class RegisterResponse(BaseModel):
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float
    max_inline_output_bytes: int = 0  # 0: inline outputs are not accepted (object-store profile)


class ClaimRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    max_jobs: int = Field(default=1, ge=1, le=256)
    wait: float = Field(default=0.0, ge=0.0, le=300.0)
    # the warm set: models in memory (as the engine names them: ``ckpt``, ``lora:name``, ``vae:name``)
    # and on disk (registry names); claims prefer jobs whose models are warm here. None: as before.
    loaded_models: list[Name] | None = Field(default=None, max_length=1000)
    cached_models: list[Name] | None = Field(default=None, max_length=10_000)


class UploadTarget(BaseModel):
    """Where to put one output: ``PUT url`` with the body (relative URLs are on the orchestrator)."""

    index: int
    key: str
    url: str
    method: str = "PUT"
    content_type: str
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers the PUT must send (signed into presigned URLs)"
    )


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


class ModelUrlRequest(WorkerBody):
    """Ask again for a model's download URL (a presigned one that expired)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
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


class BeatItem(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    job_id: WireId
    epoch: Epoch
    step: Count = 0
    total: Count = 0
    # training progress (None: not reported; a value that is not a finite number reads as None)
    loss: Annotated[Annotated[float, Field(ge=-1e12, le=1e12)] | None, BeforeValidator(_finite_or_none)] = (
        None
    )
    it_per_s: Progress = None
    eta_seconds: Progress = None


class HeartbeatRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    jobs: list[BeatItem] = Field(default_factory=list, max_length=256)
    loaded_models: list[Name] | None = Field(default=None, max_length=1000)
    cached_models: list[Name] | None = Field(default=None, max_length=10_000)


class BeatAnswerView(BaseModel):
    """The answer for one (job, epoch) of a heartbeat, in the order of the beats."""

    job_id: str
    epoch: int = 0
    action: Literal["continue", "cancel", "lost"]


class HeartbeatResponse(BaseModel):
    jobs: list[BeatAnswerView]
    worker_state: str
    lease_seconds: float


class UploadRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    job_id: WireId
    epoch: Epoch
    index: Count
    content_type: str = Field(default="image/png", max_length=100)


class OutputItem(WorkerBody):
    """One output: stored at ``key`` beforehand, or sent inline as ``data_b64`` (small ones, local
    blob store only)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=10_000)
    key: str | None = Field(default=None, max_length=1000)
    data_b64: str | None = None
    content_type: str = Field(default="image/png", max_length=100)
    size: int | None = Field(default=None, ge=0, le=INT63)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED)
    infotext: str | None = Field(default=None, max_length=65536)


class CompleteItem(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    job_id: WireId
    epoch: Epoch
    outputs: list[OutputItem] = Field(default_factory=list, max_length=1000)
    engine_seconds: Seconds = 0.0
    timings: Timings = Field(default_factory=dict)
    result: SmallMap = Field(default_factory=dict)


class CompleteRequest(WorkerBody):
    """Either one completion (``job_id`` …) or several (``results``)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    job_id: WireId | None = None
    epoch: Epoch | None = None
    outputs: list[OutputItem] = Field(default_factory=list, max_length=1000)
    engine_seconds: Seconds = 0.0
    timings: Timings = Field(default_factory=dict)
    result: SmallMap = Field(default_factory=dict)
    results: list[CompleteItem] | None = Field(default=None, max_length=256)


class CompleteResultView(BaseModel):
    job_id: str
    status: Literal["accepted", "duplicate", "stale"]
    message: str = ""


class CompleteResponse(BaseModel):
    results: list[CompleteResultView]


class FailRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    job_id: WireId
    epoch: Epoch
    code: str = Field(default="engine_error", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    message: ErrorText = ""
    retryable: bool = True
    engine_seconds: Seconds = 0.0
    field: str | None = Field(
        default=None, max_length=200, description="The job field an input error is about (invalid_input)"
    )


class ReleaseRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    job_id: WireId
    epoch: Epoch
    reason: ErrorText = "worker stopping"
    engine_seconds: Seconds = 0.0


class CheckpointUploadRequest(WorkerBody):
    """Where to store a training checkpoint (a job this worker holds)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    epoch: Epoch
    step: int = Field(ge=1, le=INT32)


class CheckpointReport(WorkerBody):
    """A training checkpoint stored at ``key`` (from :class:`CheckpointUploadRequest`): record it on the
    job (fenced by the lease epoch)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: WireId
    epoch: Epoch
    step: int = Field(ge=1, le=INT32)
    key: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0, le=INT63)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class CheckpointAnswer(BaseModel):
    job_id: str
    step: int
    kept: list[int]
    deleted: int


class StopRequest(WorkerBody):
    model_config = ConfigDict(extra="forbid")

    worker_id: WireId


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
