"""Pure domain types: job kinds and states, the generation spec, jobs, attempts, workers.

Nothing here does I/O. The spec is a pydantic model because it crosses every boundary as JSON
(API → store → worker → engine); the records read back from the store are plain dataclasses.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sdfleet.errors import LimitExceeded, ValidationError


class JobKind(StrEnum):
    """What a job asks a worker to do."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    TRAIN_LORA = "train_lora"
    UPSCALE = "upscale"  # the Extras tab: an upscaler model or a resize, face restoration
    SD_UPSCALE = "sd_upscale"  # A1111's SD upscale script: a parent whose child jobs do the work
    UPSCALE_BATCH = "upscale_batch"  # A1111's extra-batch-images: a parent of one upscale job per image
    ANNOTATE = "annotate"  # a ControlNet preprocessor ("annotator") run on one image: the control map


PARENT_KINDS = frozenset({JobKind.SD_UPSCALE, JobKind.UPSCALE_BATCH})
"""Kinds no worker runs: the job system runs them as child jobs (:mod:`sdfleet.jobs.fanout`)."""


GENERATION_KINDS = (JobKind.TXT2IMG.value, JobKind.IMG2IMG.value)


class JobState(StrEnum):
    """Where a job is in its life. ``running → queued`` happens when a lease is lost or released."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # a parent job, waiting for its child jobs
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)
UNREADABLE_SPEC = "__unreadable_spec__"
"""The one key of the spec a job is read back with when its stored spec is not JSON (a row written by
hand or by an older version): its value says why. Such a job is never handed to a worker."""


class Arch(StrEnum):
    """Base model architectures a worker can serve."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


class Feature(IntFlag):
    """Optional engine features a job may need and a worker may offer (stored as a bitmask)."""

    NONE = 0
    LORA = 1
    INPAINT = 2
    HIRES = 4
    REFINER = 8
    CONTROLNET = 16
    EMBEDDING = 32
    GPU = 64  # work only a GPU-class worker should take (RRDB upscalers); CPU workers may opt in
    FACES = 128  # face restoration: the worker can load GFPGAN/CodeFormer (spandrel is installed)
    ANNOTATE_DEPTH = 256  # annotate jobs of the depth preprocessors (ONNX weights: onnxruntime is installed)
    ANNOTATE_LINEART = 512  # annotate jobs of the lineart preprocessors (ONNX weights)

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> Feature:
        value = cls.NONE
        for name in names:
            try:
                value |= cls[name.upper()]
            except KeyError as exc:
                raise ValidationError(f"unknown feature {name!r}", field="features") from exc
        return value

    def names(self) -> list[str]:
        return [f.name.lower() for f in Feature if f and f in self and f.name]


class AttemptOutcome(StrEnum):
    """How one hand-out of a job to a worker ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # lease lost: the node vanished or stalled
    RELEASED = "released"  # the worker gave the job back (graceful stop)
    CANCELED = "canceled"


class WorkerState(StrEnum):
    """Whether a worker gets work."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"
    STOPPED = "stopped"


class EventType(StrEnum):
    """Events on a job's stream (server-sent events and webhooks)."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    OUTPUT = "output"
    REQUEUED = "requeued"
    CHECKPOINT = "checkpoint"  # a training job saved a resumable checkpoint
    FINISHED = "finished"


class ModelKind(StrEnum):
    """What a registered model file is."""

    CHECKPOINT = "checkpoint"
    LORA = "lora"
    VAE = "vae"
    EMBEDDING = "embedding"
    CONTROLNET = "controlnet"
    IP_ADAPTER = "ip_adapter"  # IP-Adapter (image prompts); arch: SD family and image encoder (sd1-vit-h)
    IMAGE_ENCODER = "image_encoder"  # a CLIP vision encoder for IP-Adapters; arch: its family (vit-h)
    T2I_ADAPTER = "t2i_adapter"  # steers like a ControlNet: named by a ControlNet unit's model, as in A1111
    UPSCALER = "upscaler"
    FACE_RESTORER = "face_restorer"  # GFPGAN / CodeFormer weights (run through spandrel)
    FACE_DETECTOR = "face_detector"  # YuNet's ONNX file (OpenCV's FaceDetectorYN)
    ANNOTATOR = "annotator"  # a ControlNet preprocessor's weights (ONNX), arch = the module family it serves


ARCH_RESOLUTION: dict[str, int] = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sdxl_refiner": 1024}
"""The side in pixels each architecture's checkpoints are usually trained at."""


@dataclass(slots=True)
class ModelRecord:
    """A model in the registry: jobs name it; workers fetch it from ``source`` and verify it."""

    name: str
    kind: ModelKind
    arch: str | None
    source: str
    sha256: str | None
    size: int | None
    trigger_words: list[str] = field(default_factory=list)
    default_weight: float = 1.0
    description: str = ""
    created_at: float = 0.0
    resolution: int | None = None  # checkpoints: the side in px it was trained at, read at registration
    scale: int | None = None  # upscalers: how many times bigger one pass makes an image, read at registration

    @property
    def native_resolution(self) -> int | None:
        """A checkpoint's training size: as registered, else its architecture's usual one."""
        if self.kind != ModelKind.CHECKPOINT:
            return None
        return self.resolution or (ARCH_RESOLUTION.get(self.arch) if self.arch else None)

    @property
    def short_hash(self) -> str:
        """A1111's "Model hash": the first 10 hex digits of the file's sha256."""
        return (self.sha256 or "")[:10]


def new_id(prefix: str = "") -> str:
    """A sortable unique id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


class LoraRef(BaseModel):
    """A LoRA applied to a generation, by registry name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    weight: float = Field(default=1.0, ge=-10, le=10)
    te_weight: float | None = Field(default=None, ge=-10, le=10)


CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
"""A1111's ControlNet control modes, in the order of their integer values."""
CONTROL_RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
"""How a control image is fitted to the picture, A1111's ControlNet labels in the order of their values."""
CONTROL_HR_OPTIONS = ("Both", "Low res only", "High res only")
"""Which passes of a hires-fix generation a ControlNet unit steers."""
UNION_CONTROL_TYPES = (
    "OpenPose",
    "Depth",
    "Soft Edge",
    "Hard Edge",
    "Normal Map",
    "Segmentation",
    "Tile",
    "Inpaint",
)
"""ControlNet Union's control types (xinsir's ControlNet++: the first six in ``controlnet-union-sdxl-1.0``, all
eight in ProMax), the A1111 ControlNet extension's ``union_control_type`` values, in the order of the net's
task embeddings."""
_UNION_TAGS = {
    "openpose": "OpenPose",
    "pose": "OpenPose",
    "depth": "Depth",
    "softedge": "Soft Edge",
    "scribble": "Soft Edge",
    "hed": "Soft Edge",
    "canny": "Hard Edge",
    "lineart": "Hard Edge",
    "mlsd": "Hard Edge",
    "normal": "Normal Map",
    "normalmap": "Normal Map",
    "segmentation": "Segmentation",
    "seg": "Segmentation",
    "tile": "Tile",
    "blur": "Tile",
    "inpaint": "Inpaint",
}
"""The extension's control-type tags (its ``from_str``) and a few common names, to the type they mean."""


def union_control_type(value: str | None) -> str | None:
    """A unit's Union control type by the extension's value (any case) or tag (``canny`` → ``Hard Edge``);
    None for none or ``Unknown``; ValueError for anything else."""
    if value is None or not value.strip() or value.strip().lower() == "unknown":
        return None
    key = value.strip().lower()
    for name in UNION_CONTROL_TYPES:
        if key == name.lower():
            return name
    if key.replace(" ", "").replace("_", "") in _UNION_TAGS:
        return _UNION_TAGS[key.replace(" ", "").replace("_", "")]
    raise ValueError(f"{value!r} is not a ControlNet Union control type ({', '.join(UNION_CONTROL_TYPES)})")


class ControlNetUnit(BaseModel):
    """One ControlNet unit of a generation (the A1111 ControlNet extension's unit fields): a registered net
    (``model``), the control image it reads (``image``: a reference, as ``init_images``; none on img2img: the
    init image), how strongly and when it steers (``weight``; ``guidance_start``/``guidance_end`` as
    fractions of the steps) and how it balances with the prompt (``control_mode``). ``module`` is the
    preprocessor that turns the image into the net's control map; ``none`` sends the image as it is. ``model``
    may name a ControlNet, a ControlNet Union (then ``union_control_type`` says what the map is) or a
    T2I-Adapter, as in the extension. ``preprocessed``: the image already is the module's map (the server sets
    it once an ``annotate`` job made the map): the engine uses it as it is, and the infotext still names the
    module.

    A unit whose ``model`` is a registered IP-Adapter is an image prompt: ``image`` is the reference picture,
    ``module`` one of the extension's ``ip-adapter_clip_*`` preprocessors (or ``ip-adapter-auto``/``none``),
    and ``image_encoder`` the registered CLIP vision encoder it runs (none given: one that fits, chosen at
    submit)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    module: str = Field(default="none", min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=200)
    weight: float = Field(default=1.0, ge=0.0, le=2.0)
    image: str | None = None
    mask: str | None = None
    """The extension's unit mask (a reference): the inpaint modules' mask; for other modules a mask that is
    not blank is a scribble drawn on the canvas and becomes the control image, as the extension does."""
    effective_region_mask: str | None = None
    """Where the unit steers (a reference): its residuals × this mask, resized to each residual."""
    resize_mode: Literal["Just Resize", "Crop and Resize", "Resize and Fill"] = "Crop and Resize"
    processor_res: int = Field(default=512, ge=64, le=2048)
    threshold_a: float | None = Field(default=None, ge=-1e6, le=1e6)
    threshold_b: float | None = Field(default=None, ge=-1e6, le=1e6)
    guidance_start: float = Field(default=0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(default=1.0, ge=0.0, le=1.0)
    pixel_perfect: bool = False
    control_mode: Literal["Balanced", "My prompt is more important", "ControlNet is more important"] = (
        "Balanced"
    )
    hr_option: Literal["Both", "Low res only", "High res only"] = "Both"
    save_detected_map: bool = True
    image_encoder: str | None = Field(default=None, min_length=1, max_length=200)
    union_control_type: str | None = Field(
        default=None,
        max_length=40,
        description="ControlNet Union only: what the control image is (one of UNION_CONTROL_TYPES).",
    )

    @field_validator("union_control_type")
    @classmethod
    def _union_type(cls, value: str | None) -> str | None:
        return union_control_type(value)

    preprocessed: bool = False

    @model_validator(mode="after")
    def _window(self) -> ControlNetUnit:
        if self.guidance_start > self.guidance_end:
            raise ValueError(
                f"guidance_start ({self.guidance_start}) is after guidance_end ({self.guidance_end})"
            )
        return self


class GenerationSpec(BaseModel):
    """One generation request: the A1111 parameter set plus what the A1111 API leaves implicit.

    Images (``init_images``, ``mask``) are references: a blob key of this deployment
    (``blob:…``) or a ``data:`` URL that the API layer has already stored.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = Field(default=-1, ge=-1, le=2**32 - 1)
    subseed: int = Field(default=-1, ge=-1, le=2**32 - 1)
    subseed_strength: float = Field(default=0.0, ge=0.0, le=1.0)
    steps: int = Field(default=20, ge=1)
    cfg_scale: float = Field(default=7.0, ge=0.0, le=100.0)
    sampler_name: str = "Euler a"
    scheduler: str = "automatic"
    width: int = Field(default=512, ge=8)
    height: int = Field(default=512, ge=8)
    batch_size: int = Field(default=1, ge=1)
    n_iter: int = Field(default=1, ge=1)
    model: str | None = None
    vae: str | None = None
    loras: list[LoraRef] = Field(default_factory=list)
    clip_skip: int = Field(default=1, ge=1, le=12)
    eta: float | None = Field(default=None, ge=0.0, le=10.0)
    guidance_rescale: float = Field(default=0.0, ge=0.0, le=1.0)
    # img2img / inpainting
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    denoising_strength: float = Field(default=0.75, ge=0.0, le=1.0)
    resize_mode: int = Field(default=0, ge=0, le=3)
    mask_blur: int = Field(default=4, ge=0, le=64)
    inpainting_fill: int = Field(default=1, ge=0, le=3)
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = Field(default=32, ge=0, le=256)
    inpainting_mask_invert: bool = False
    # hires fix
    enable_hr: bool = False
    hr_scale: float = Field(default=2.0, ge=1.0, le=4.0)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(default=0, ge=0)
    hr_resize_x: int = Field(default=0, ge=0, le=65536)
    hr_resize_y: int = Field(default=0, ge=0, le=65536)
    hr_denoising_strength: float = Field(default=0.7, ge=0.0, le=1.0)
    # SDXL refiner
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = Field(default=0.8, ge=0.0, le=1.0)
    # face restoration after generation (A1111's restore_faces): the registered restorer it uses (the
    # server picks one when none is named) and CodeFormer's fidelity weight (A1111's code_former_weight)
    restore_faces: bool = False
    face_restorer: str | None = None
    face_restorer_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    # ControlNet units (disabled ones are kept, as A1111 clients send them, and skipped)
    controlnet: list[ControlNetUnit] = Field(default_factory=list)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_quality: int = Field(default=95, ge=1, le=100)
    preview_every: int = Field(
        default=0, ge=0, le=100_000, description="Send a preview every K steps (0: none)."
    )

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @property
    def images_per_job(self) -> int:
        return self.batch_size * self.n_iter

    def output_size(self) -> tuple[int, int]:
        """Width and height of the final images (after hires fix, when enabled)."""
        if not self.enable_hr:
            return self.width, self.height
        if self.hr_resize_x or self.hr_resize_y:
            w = self.hr_resize_x or round(self.width * self.hr_resize_y / self.height)
            h = self.hr_resize_y or round(self.height * self.hr_resize_x / self.width)
            return w, h
        return round(self.width * self.hr_scale), round(self.height * self.hr_scale)

    def features(self) -> Feature:
        value = Feature.NONE
        if self.loras:
            value |= Feature.LORA
        if self.mask:
            value |= Feature.INPAINT
        if self.enable_hr:
            value |= Feature.HIRES
        if self.refiner_checkpoint:
            value |= Feature.REFINER
        if self.restore_faces and self.face_restorer:
            value |= Feature.FACES
        if self.active_controlnet:
            value |= Feature.CONTROLNET
        return value

    @property
    def active_controlnet(self) -> list[tuple[int, ControlNetUnit]]:
        """The enabled ControlNet units with their indices in ``controlnet``."""
        return [(i, unit) for i, unit in enumerate(self.controlnet) if unit.enabled]

    def _check_sizes(self, limits: LimitsLike) -> None:
        """How many styles, LoRAs and init images, and how long the names are."""
        counts: list[tuple[str, int, int]] = [
            ("styles", len(self.styles), limits.max_styles),
            ("loras", len(self.loras), limits.max_loras),
            ("init_images", len(self.init_images), limits.max_input_images),
            ("controlnet", len(self.controlnet), limits.max_controlnet_units),
        ]
        for name, count, limit in counts:
            if count > limit:
                raise LimitExceeded(f"{name} has {count} entries, the limit is {limit}", field=name)
        for index, style in enumerate(self.styles):
            if len(style) > limits.max_style_chars:
                raise LimitExceeded(
                    f"styles.{index} has {len(style)} characters, the limit is {limits.max_style_chars}",
                    field=f"styles.{index}",
                )
        names = (
            "sampler_name",
            "scheduler",
            "model",
            "vae",
            "hr_upscaler",
            "refiner_checkpoint",
            "face_restorer",
        )
        for name in names:
            value = getattr(self, name)
            if value is not None and len(value) > limits.max_name_chars:
                raise LimitExceeded(
                    f"{name} has {len(value)} characters, the limit is {limits.max_name_chars}", field=name
                )

    def check_limits(self, limits: LimitsLike) -> None:
        """Raise :class:`LimitExceeded` naming the first field that is over a limit."""
        checks: list[tuple[str, int | float, int | float]] = [
            ("width", self.width, limits.max_width),
            ("height", self.height, limits.max_height),
            ("steps", self.steps, limits.max_steps),
            ("hr_second_pass_steps", self.hr_second_pass_steps, limits.max_steps),
            ("batch_size", self.batch_size, limits.max_batch_size),
            ("n_iter", self.n_iter, limits.max_n_iter),
            ("prompt", len(self.prompt), limits.max_prompt_chars),
            ("negative_prompt", len(self.negative_prompt), limits.max_prompt_chars),
        ]
        for name, value, limit in checks:
            if value > limit:
                raise LimitExceeded(f"{name} is {value}, the limit is {limit}", field=name)
        self._check_sizes(limits)
        if self.images_per_job > limits.max_images_per_job:
            raise LimitExceeded(
                f"batch_size × n_iter is {self.images_per_job}, the limit is {limits.max_images_per_job}",
                field="n_iter",
            )
        w, h = self.output_size()
        if w * h > limits.max_pixels or w > limits.max_width or h > limits.max_height:
            field_name = "hr_scale" if self.enable_hr else "width"
            raise LimitExceeded(
                f"the output is {w}×{h} pixels, the limit is {limits.max_width}×{limits.max_height} "
                f"and {limits.max_pixels} pixels",
                field=field_name,
            )
        if self.width % 8 or self.height % 8:
            raise ValidationError("width and height must be multiples of 8", field="width")


class LimitsLike(Protocol):
    """Structural stand-in for :class:`sdfleet.config.Limits` (domain imports nothing of ours)."""

    max_width: int
    max_height: int
    max_pixels: int
    max_steps: int
    max_batch_size: int
    max_n_iter: int
    max_images_per_job: int
    max_prompt_chars: int
    max_styles: int
    max_style_chars: int
    max_loras: int
    max_input_images: int
    max_controlnet_units: int
    max_name_chars: int


@dataclass(slots=True, frozen=True)
class Requirements:
    """What a worker must offer to take a job: derived from the spec when the job is submitted."""

    kind: JobKind
    arch: str | None
    pixels: int
    features: Feature
    model: str | None = None

    @classmethod
    def for_spec(cls, kind: JobKind, spec: GenerationSpec, arch: str | None = None) -> Requirements:
        w, h = spec.output_size()
        return cls(
            kind=kind, arch=arch, pixels=w * h * spec.batch_size, features=spec.features(), model=spec.model
        )

    def describe(self) -> str:
        parts = [self.kind.value]
        if self.arch:
            parts.append(f"{self.arch.upper()}-capable")
        if self.features:
            parts.append("with " + ", ".join(self.features.names()))
        return " ".join(parts) + f", {self.pixels:,} pixels × batch"


@dataclass(slots=True, frozen=True)
class Capabilities:
    """What a worker can serve."""

    kinds: tuple[str, ...] = GENERATION_KINDS
    archs: tuple[str, ...] = (Arch.SD1.value, Arch.SD2.value, Arch.SDXL.value)
    max_pixels: int = 1024 * 1024 * 4
    features: Feature = Feature.NONE

    def accepts(self, req: Requirements) -> bool:
        return (
            req.kind.value in self.kinds
            and (req.arch is None or req.arch in self.archs)
            and req.pixels <= self.max_pixels
            and (req.features & ~self.features) == 0
        )

    def why_not(self, req: Requirements) -> str | None:
        if req.kind.value not in self.kinds:
            return f"does not run {req.kind.value} jobs"
        if req.arch is not None and req.arch not in self.archs:
            return f"cannot run {req.arch.upper()} models"
        if req.pixels > self.max_pixels:
            return f"accepts at most {self.max_pixels:,} pixels × batch (job needs {req.pixels:,})"
        missing = req.features & ~self.features
        if missing:
            return "lacks " + ", ".join(Feature(missing).names())
        return None


@dataclass(slots=True)
class Job:
    """A job as stored."""

    id: str
    tenant: str
    kind: JobKind
    state: JobState
    spec: dict[str, Any]
    priority: int
    created_at: float
    updated_at: float
    requirements: Requirements
    queued_at: float | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    lease_epoch: int = 0
    lease_worker: str | None = None
    lease_expires_at: float | None = None
    failures: int = 0
    interruptions: int = 0
    stalled: bool = False
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    progress_step: int = 0
    progress_total: int = 0
    wait_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    engine_seconds: float = 0.0
    cost_usd: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """Training jobs: the kept checkpoints, oldest first (``step``, ``key``, ``size``, ``epoch``, ``at``)."""
    progress_info: dict[str, Any] = field(default_factory=dict)
    """Progress beyond step/total from the last heartbeat (training: ``loss``, ``it_per_s``, ``eta_seconds``)."""
    parent_id: str | None = None
    """The parent job this one is a child of (its tiles, its stages), if any."""
    stage: int = 0
    """A parent job's stage: which of its rounds of child jobs it is waiting for."""
    gpu_charge: float = 0.0
    """Estimated GPU seconds its submit took from the tenant's daily budget (0: none was charged)."""

    @property
    def images_expected(self) -> int:
        """Outputs the job produces: images, or for training the LoRA file plus the final validation
        images (one per validation prompt)."""
        if self.kind == JobKind.TRAIN_LORA:
            return 1 + len(self.spec.get("validation_prompts") or [])
        if self.kind in (JobKind.UPSCALE, JobKind.SD_UPSCALE, JobKind.ANNOTATE):
            return 1
        if self.kind == JobKind.UPSCALE_BATCH:
            return len(self.spec.get("images") or ())
        return self.images_generated + self.detected_maps

    @property
    def images_generated(self) -> int:
        """The pictures a generation job draws (``batch_size × n_iter``), before any detected maps."""
        return int(self.spec.get("batch_size", 1)) * int(self.spec.get("n_iter", 1))

    @property
    def detected_maps(self) -> int:
        """The ControlNet control maps a generation job returns after its pictures, as the A1111 extension
        appends them: one per enabled unit with ``save_detected_map`` (its default)."""
        if self.kind not in (JobKind.TXT2IMG, JobKind.IMG2IMG):
            return 0
        units = self.spec.get("controlnet") or []
        return sum(
            1
            for u in units
            if isinstance(u, dict) and u.get("enabled", True) and u.get("save_detected_map", True)
        )

    @property
    def latest_checkpoint(self) -> dict[str, Any] | None:
        return self.checkpoints[-1] if self.checkpoints else None


@dataclass(slots=True)
class Attempt:
    """One hand-out of a job to a worker."""

    id: int
    job_id: str
    worker_id: str
    epoch: int
    started_at: float
    last_heartbeat_at: float
    outcome: AttemptOutcome
    ended_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    engine_seconds: float = 0.0
    price_per_hour: float = 0.0
    cost_usd: float = 0.0
    refunded: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class WorkerInfo:
    """A registered worker."""

    id: str
    name: str
    tenant: str
    state: WorkerState
    capabilities: Capabilities
    gpu_name: str
    gpu_memory_mb: int
    price_per_hour: float
    engine: str
    version: str
    registered_at: float
    last_seen_at: float
    quarantined_until: float | None = None
    quarantine_reason: str | None = None
    jobs_done: int = 0
    jobs_failed: int = 0
    engine_seconds: float = 0.0
    current_jobs: list[str] = field(default_factory=list)
    loaded_models: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    cached_models: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Output:
    """One image (or file) a job produced."""

    job_id: str
    index: int
    blob_key: str
    content_type: str
    size: int
    seed: int | None
    infotext: str | None
    created_at: float
    sha256: str | None = None


@dataclass(slots=True)
class Event:
    """One entry of a job's event stream."""

    id: int
    job_id: str
    tenant: str
    type: EventType
    data: dict[str, Any]
    created_at: float
