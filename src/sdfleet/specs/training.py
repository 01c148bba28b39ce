"""The parameters of one LoRA training job (:class:`LoraTrainSpec`), validated, without torch.

The job system stores this spec with a ``train_lora`` job; a worker hands it to
:class:`sdfleet.training.trainer.LoraTrainer` together with local paths for the images it references.
Bounds here are the hard limits of the trainer; a deployment may apply stricter ones at submit.

:meth:`LoraTrainSpec.parse` turns pydantic's errors into :class:`sdfleet.errors.ValidationError` (HTTP 422)
naming the first offending field (``images.2.caption``, ``lr_warmup_steps``…), like the jobs API does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from sdfleet.errors import ValidationError

LrScheduler = Literal["constant", "constant_with_warmup", "cosine", "linear"]
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]

LORA_CONTENT_TYPE = "application/vnd.safetensors"
"""The content type of a trained LoRA (a training job's output 0), on the worker and the orchestrator."""

MAX_IMAGES = 500
MAX_CLASS_IMAGES = 1000
MAX_STEPS = 100_000
MAX_PROMPT_CHARS = 2000
_TRIGGER = re.compile(r"^[^\x00-\x1f<>:]{1,100}$")
_NAME = re.compile(r"^[\w][\w .()+\-\[\]/]{0,199}$")  # the model registry's rule

# fields that do not change the trained weights: a checkpoint made under one value resumes under another
NON_TRAINING_FIELDS = frozenset(
    {
        "name",
        "base_model",
        "checkpoint_every",
        "keep_checkpoints",
        "validation_prompts",
        "validation_every",
        "validation_steps",
        "validation_cfg_scale",
        "validation_negative_prompt",
        "class_image_steps",
    }
)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class TrainImageRef(BaseModel):
    """One training image: a reference the job system resolves (blob key, input id, file name) and an
    optional caption (the instance prompt is used when there is none)."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(min_length=1, max_length=1000)
    caption: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    @field_validator("caption")
    @classmethod
    def _caption(cls, value: str | None) -> str | None:
        return _no_nul(value) if value is not None else value


class LoraTrainSpec(BaseModel):
    """A DreamBooth-style LoRA training job: what to train on, how, and what to report along the way."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Name of the resulting LoRA (registry name; also its file's ss_output_name).",
    )
    base_model: str = Field(min_length=1, max_length=200, description="Registry name of the base checkpoint.")
    images: list[TrainImageRef] = Field(min_length=1, max_length=MAX_IMAGES)
    instance_prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    trigger_word: str | None = Field(
        default=None, description="The new concept's token; must appear in instance_prompt."
    )
    # prior preservation
    class_prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    prior_preservation: bool = False
    prior_loss_weight: float = Field(default=1.0, gt=0.0, le=10.0)
    class_images: list[TrainImageRef] = Field(default_factory=list, max_length=MAX_CLASS_IMAGES)
    num_class_images: int = Field(
        default=50,
        ge=1,
        le=MAX_CLASS_IMAGES,
        description="Class images wanted; those not given are generated with the base model at the start.",
    )
    class_image_steps: int = Field(default=20, ge=1, le=100)
    # data
    resolution: int = Field(default=512, ge=32, le=2048)
    random_flip: bool = False
    # optimisation
    steps: int = Field(default=1000, ge=1, le=MAX_STEPS)
    batch_size: int = Field(default=1, ge=1, le=64)
    rank: int = Field(default=8, ge=1, le=256)
    alpha: float | None = Field(default=None, gt=0.0, le=1024.0, description="LoRA alpha (default: rank).")
    learning_rate: float = Field(default=1e-4, gt=0.0, le=1.0)
    text_encoder_lr: float | None = Field(default=None, gt=0.0, le=1.0)
    lr_scheduler: LrScheduler = "constant"
    lr_warmup_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(default=1e-2, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, ge=0.0, le=1000.0, description="0: no clipping.")
    noise_offset: float = Field(default=0.0, ge=0.0, le=1.0)
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    mixed_precision: MixedPrecision = "auto"
    # checkpoints and validation
    checkpoint_every: int = Field(
        default=0, ge=0, le=MAX_STEPS, description="Steps between checkpoints (0: none)."
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=100)
    validation_prompts: list[str] = Field(default_factory=list, max_length=8)
    validation_negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    validation_every: int = Field(
        default=0, ge=0, le=MAX_STEPS, description="Steps between renders (0: none)."
    )
    validation_steps: int = Field(default=20, ge=1, le=100)
    validation_cfg_scale: float = Field(default=7.0, ge=0.0, le=30.0)

    @field_validator("instance_prompt", "class_prompt", "validation_negative_prompt")
    @classmethod
    def _prompts(cls, value: str | None) -> str | None:
        return _no_nul(value) if value is not None else value

    @field_validator("validation_prompts")
    @classmethod
    def _validation_prompts(cls, value: list[str]) -> list[str]:
        for prompt in value:
            _no_nul(prompt)
            if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"each prompt must have 1 to {MAX_PROMPT_CHARS} characters")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not _NAME.match(value) or ".." in value):
            raise ValueError("must be a model registry name: letters, digits, ' .()+-[]/_', no '..' or ':'")
        return value

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _TRIGGER.fullmatch(value):
            raise ValueError("must be 1 to 100 characters without control characters, '<', '>' or ':'")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoraTrainSpec:
        if self.trigger_word and self.trigger_word not in self.instance_prompt:
            raise _FieldError("trigger_word", f"{self.trigger_word!r} does not appear in instance_prompt")
        if self.prior_preservation and not self.class_prompt:
            raise _FieldError("class_prompt", "prior preservation needs a class prompt")
        if self.class_images and not self.prior_preservation:
            raise _FieldError("class_images", "class images are only used with prior_preservation")
        if self.lr_warmup_steps >= self.steps and self.lr_warmup_steps:
            raise _FieldError("lr_warmup_steps", f"must be less than steps ({self.steps})")
        if self.lr_scheduler == "constant" and self.lr_warmup_steps:
            raise _FieldError(
                "lr_warmup_steps", "the constant scheduler has no warm-up; use constant_with_warmup"
            )
        if self.validation_every and not self.validation_prompts:
            raise _FieldError("validation_prompts", "validation_every is set but there are no prompts")
        return self

    # ------------------------------------------------------------------ helpers
    @classmethod
    def parse(cls, raw: Mapping[str, Any] | LoraTrainSpec) -> LoraTrainSpec:
        """Validate ``raw``; a problem raises :class:`sdfleet.errors.ValidationError` naming the field."""
        if isinstance(raw, LoraTrainSpec):
            return raw
        try:
            return cls.model_validate(raw)
        except PydanticValidationError as exc:
            raise to_validation_error(exc) from exc

    @property
    def network_alpha(self) -> float:
        """LoRA alpha: the scale of the update is ``alpha / rank``."""
        return float(self.alpha) if self.alpha is not None else float(self.rank)

    @property
    def effective_class_images(self) -> int:
        """How many class images training uses (0 without prior preservation)."""
        if not self.prior_preservation:
            return 0
        return max(self.num_class_images, len(self.class_images))

    def training_fingerprint(self) -> str:
        """The fields that change the trained weights, as canonical JSON (a resume must match it)."""
        values = self.model_dump(mode="json", exclude=set(NON_TRAINING_FIELDS))
        return json.dumps(values, sort_keys=True, separators=(",", ":"))


class _FieldError(ValueError):
    """A model-level check that knows which field is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def to_validation_error(exc: PydanticValidationError) -> ValidationError:
    """pydantic's error → ours: message ``field: problem``, ``field`` set, every problem in ``details``."""
    problems: list[dict[str, str]] = []
    for err in exc.errors()[:20]:
        field = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            field = ".".join(p for p in (field, cause.field) if p)
            message = cause.message
        problems.append({"field": field or "body", "message": message})
    first = problems[0] if problems else {"field": "body", "message": "invalid training spec"}
    return ValidationError(
        f"{first['field']}: {first['message']}", field=first["field"], details={"problems": problems}
    )
