"""The A1111 API's request and response bodies (``/sdapi/v1/*``, ``/internal/*``), as pydantic models.

The generation requests mirror A1111 1.10's ``StableDiffusionTxt2ImgProcessingAPI`` and
``StableDiffusionImg2ImgProcessingAPI``: every field is optional and keeps A1111's **API** default (steps 50,
``sampler_index`` "Euler", inpainting "only masked" with padding 0…), ``null`` means "the default", and fields
A1111 does not know are ignored rather than refused (clients written for other versions and extensions send
them). :mod:`sdfleet.a1111.mapping` turns a request into a :class:`~sdfleet.domain.GenerationSpec`.

Plain pydantic: nothing here imports FastAPI or does I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EmbeddingItem",
    "EmbeddingsResponse",
    "ExtensionItem",
    "FaceRestorerItem",
    "HypernetworkItem",
    "ImageToImageResponse",
    "Img2ImgRequest",
    "InternalProgressRequest",
    "InternalProgressResponse",
    "LatentUpscaleModeItem",
    "LoraItem",
    "MemoryResponse",
    "PNGInfoRequest",
    "PNGInfoResponse",
    "ProcessingRequest",
    "ProgressResponse",
    "ProgressState",
    "PromptStyleItem",
    "RealesrganItem",
    "SDModelItem",
    "SDVaeItem",
    "SamplerItem",
    "SchedulerItem",
    "ScriptArg",
    "ScriptInfo",
    "ScriptsList",
    "TextToImageResponse",
    "Txt2ImgRequest",
    "UpscalerItem",
]

_LENIENT = ConfigDict(extra="ignore", populate_by_name=True)


class ProcessingRequest(BaseModel):
    """The fields txt2img and img2img share (A1111's ``StableDiffusionProcessing`` plus the API extras)."""

    model_config = _LENIENT

    prompt: str | list[str] | None = ""
    negative_prompt: str | list[str] | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0.0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = 0.75
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: Any | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = Field(default=None, max_length=200)
    infotext: str | None = Field(default=None, max_length=65536)
    # API-only extras
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)


class Txt2ImgRequest(ProcessingRequest):
    """``POST /sdapi/v1/txt2img``: A1111's ``StableDiffusionTxt2ImgProcessingAPI``."""

    enable_hr: bool | None = False
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2ImgRequest(ProcessingRequest):
    """``POST /sdapi/v1/img2img``: A1111's ``StableDiffusionImg2ImgProcessingAPI`` (also inpainting)."""

    init_images: list[str] | None = None
    resize_mode: int | None = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False


class TextToImageResponse(BaseModel):
    """``{images, parameters, info}``: raw base64 images, the request echoed, ``info`` a JSON **string**."""

    images: list[str] = Field(default_factory=list, description="The generated images in base64 format.")
    parameters: dict[str, Any]
    info: str


class ImageToImageResponse(TextToImageResponse):
    """The img2img answer; the same shape as txt2img's."""


class PNGInfoRequest(BaseModel):
    """``POST /sdapi/v1/png-info``."""

    model_config = _LENIENT

    image: str = Field(description="The base64 encoded image (a data: prefix is allowed)")


class PNGInfoResponse(BaseModel):
    """The infotext of an image, its other metadata, and the infotext parsed as A1111 parses it."""

    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProgressState(BaseModel):
    """A1111's ``shared.state.dict()``."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    """``GET /sdapi/v1/progress``."""

    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None


class InternalProgressRequest(BaseModel):
    """``POST /internal/progress``: the progress of one task id (``force_task_id``)."""

    model_config = _LENIENT

    id_task: str | None = Field(default=None, max_length=200)
    id_live_preview: int = -1
    live_preview: bool = True


class InternalProgressResponse(BaseModel):
    """The answer of ``POST /internal/progress``."""

    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None
    id_live_preview: int | None = None
    textinfo: str | None = None


class SamplerItem(BaseModel):
    """One entry of ``/sdapi/v1/samplers``."""

    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    """One entry of ``/sdapi/v1/schedulers``."""

    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class UpscalerItem(BaseModel):
    """One entry of ``/sdapi/v1/upscalers``."""

    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscaleModeItem(BaseModel):
    """One entry of ``/sdapi/v1/latent-upscale-modes``."""

    name: str


class SDModelItem(BaseModel):
    """One entry of ``/sdapi/v1/sd-models``: title is ``name [hash10]``."""

    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class SDVaeItem(BaseModel):
    """One entry of ``/sdapi/v1/sd-vae``."""

    model_name: str
    filename: str


class LoraItem(BaseModel):
    """One entry of ``/sdapi/v1/loras``."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class HypernetworkItem(BaseModel):
    """One entry of ``/sdapi/v1/hypernetworks``."""

    name: str
    path: str | None = None


class FaceRestorerItem(BaseModel):
    """One entry of ``/sdapi/v1/face-restorers``."""

    name: str
    cmd_dir: str | None = None


class RealesrganItem(BaseModel):
    """One entry of ``/sdapi/v1/realesrgan-models``."""

    name: str
    path: str | None = None
    scale: int | None = None


class PromptStyleItem(BaseModel):
    """One entry of ``/sdapi/v1/prompt-styles``."""

    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class EmbeddingItem(BaseModel):
    """One textual-inversion embedding; sizes are null when the registry does not know them."""

    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int | None = None
    vectors: int | None = None


class EmbeddingsResponse(BaseModel):
    """``/sdapi/v1/embeddings``."""

    loaded: dict[str, EmbeddingItem] = Field(default_factory=dict)
    skipped: dict[str, EmbeddingItem] = Field(default_factory=dict)


class MemoryResponse(BaseModel):
    """``/sdapi/v1/memory``: ``ram`` and ``cuda`` dicts (``{"error": …}`` when unavailable)."""

    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(BaseModel):
    """``/sdapi/v1/scripts``: script names (lower case) per tab."""

    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(BaseModel):
    """One argument of a script in ``/sdapi/v1/script-info``."""

    label: str | None = None
    value: Any | None = None
    minimum: Any | None = None
    maximum: Any | None = None
    step: Any | None = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    """One entry of ``/sdapi/v1/script-info``."""

    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[ScriptArg] = Field(default_factory=list)


class ExtensionItem(BaseModel):
    """One entry of ``/sdapi/v1/extensions``."""

    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str | int
    enabled: bool
