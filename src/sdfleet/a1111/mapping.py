"""From an A1111 API request to a :class:`~sdfleet.domain.GenerationSpec`, and from the finished job back to
A1111's ``info``. Pure: no I/O, no web framework; the caller passes in the tenant's settings, the registry
entries a request may name, and a random source.

What A1111 does, and so what :func:`map_request` does:

- defaults are A1111's **API** defaults (steps 50, sampler from ``sampler_index`` "Euler", cfg 7, 512×512,
  inpainting "only masked" with padding 0, masked content "fill");
- ``infotext`` fills every field the client did not set, and the settings it mentions (Clip skip, ENSD, RNG,
  VAE…) become ``override_settings`` entries unless the request already overrides them;
- the sampler is ``sampler_name or sampler_index`` resolved with A1111's own rule
  (:func:`~sdfleet.a1111.samplers.get_sampler_and_scheduler`): "DPM++ 2M Karras" is split into sampler and
  schedule, and an unknown name silently becomes "DPM++ 2M" (here not silently: a note says so);
- settings come from A1111's defaults, then the tenant's ``/options``, then the request's
  ``override_settings`` — per request, never changing anyone else's;
- ``seed``/``subseed`` -1 are drawn in [0, 4294967294); image ``i`` gets ``seed + i`` (the same seed for every
  image when a variation strength is set) and ``subseed + i``.

Everything A1111 would accept but this server cannot honour is accepted and reported in
:attr:`MappedRequest.notes`, which the API puts into ``info``. Requests that cannot be run are refused with
:class:`~sdfleet.errors.ValidationError` (422) or :class:`~sdfleet.errors.NotFound` (404, a missing init
image, as A1111 answers).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from sdfleet.a1111.api import Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from sdfleet.a1111.errors import InfotextError, UnknownNameError
from sdfleet.a1111.infotext import InfotextParams, parse_infotext
from sdfleet.a1111.prompt import extract_extra_networks
from sdfleet.a1111.samplers import (
    SAMPLERS,
    SCHEDULERS,
    get_sampler_and_scheduler,
    infotext_sampler_and_scheduler,
    resolve_sampler,
    sampler_by_name,
    scheduler_by_name,
)
from sdfleet.domain import GenerationSpec, JobKind, LimitsLike, ModelRecord
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.validation import text_problem

__all__ = [
    "BUILTIN_SCRIPTS",
    "LATENT_UPSCALE_MODES",
    "MAX_OPTION_BYTES",
    "OPTION_DEFAULTS",
    "PIXEL_UPSCALERS",
    "RESTRICTED_OPTIONS",
    "SEED_RANGE",
    "BuiltinScript",
    "Catalog",
    "MappedRequest",
    "OutputRecord",
    "build_info",
    "check_request_sizes",
    "checkpoint_title",
    "effective_options",
    "map_request",
    "model_name_of",
    "new_task_id",
]

SEED_RANGE = 4294967294
"""A1111 draws a random seed with ``random.randrange(4294967294)``."""

LATENT_UPSCALE_MODES: tuple[str, ...] = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
"""A1111's ``shared.latent_upscale_modes``: the hires-fix upscalers that work on latents."""

PIXEL_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")
"""A1111's built-in pixel upscalers (no model file needed)."""

OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "sd_model_checkpoint": None,
        "sd_checkpoint_hash": "",
        "sd_checkpoints_limit": 1,
        "sd_checkpoints_keep_in_cpu": True,
        "sd_checkpoint_cache": 0,
        "sd_unet": "Automatic",
        "enable_quantization": False,
        "emphasis": "Original",
        "enable_batch_seeds": True,
        "comma_padding_backtrack": 20,
        "sdxl_clip_l_skip": False,
        "CLIP_stop_at_last_layers": 1,
        "upcast_attn": False,
        "randn_source": "GPU",
        "tiling": False,
        "hires_fix_refiner_pass": "second pass",
        "sd_vae_checkpoint_cache": 0,
        "sd_vae": "Automatic",
        "sd_vae_overrides_per_model_preferences": True,
        "auto_vae_precision": True,
        "sd_vae_encode_method": "Full",
        "sd_vae_decode_method": "Full",
        "inpainting_mask_weight": 1.0,
        "initial_noise_multiplier": 1.0,
        "img2img_extra_noise": 0.0,
        "img2img_color_correction": False,
        "img2img_fix_steps": False,
        "img2img_background_color": "#ffffff",
        "return_mask": False,
        "return_mask_composite": False,
        "overlay_inpaint": True,
        "samples_save": True,
        "samples_format": "png",
        "samples_filename_pattern": "",
        "grid_save": True,
        "grid_format": "png",
        "grid_only_if_multiple": True,
        "return_grid": True,
        "enable_pnginfo": True,
        "save_txt": False,
        "jpeg_quality": 80,
        "webp_lossless": False,
        "export_for_4chan": True,
        "img_max_size_mp": 200.0,
        "upscaler_for_img2img": None,
        "face_restoration": False,
        "face_restoration_model": "CodeFormer",
        "code_former_weight": 0.5,
        "api_enable_requests": True,
        "api_forbid_local_requests": True,
        "api_useragent": "",
        "sd_lora": "None",
        "lora_preferred_name": "Alias from file",
        "lora_add_hashes_to_infotext": True,
        "extra_networks_default_multiplier": 1.0,
        "cross_attention_optimization": "Automatic",
        "s_min_uncond": 0.0,
        "token_merging_ratio": 0.0,
        "token_merging_ratio_img2img": 0.0,
        "token_merging_ratio_hr": 0.0,
        "pad_cond_uncond": False,
        "pad_cond_uncond_v0": False,
        "persistent_cond_cache": True,
        "batch_cond_uncond": True,
        "fp8_storage": "Disable",
        "cache_fp16_weight": False,
        "use_old_emphasis_implementation": False,
        "use_old_karras_scheduler_sigmas": False,
        "no_dpmpp_sde_batch_determinism": False,
        "use_old_hires_fix_width_height": False,
        "use_old_scheduling": False,
        "refiner_switch_by_sample_steps": False,
        "live_previews_enable": True,
        "live_previews_image_format": "png",
        "show_progress_grid": True,
        "show_progress_every_n_steps": 10,
        "show_progress_type": "Approx NN",
        "hide_samplers": [],
        "eta_ddim": 0.0,
        "eta_ancestral": 1.0,
        "ddim_discretize": "uniform",
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": 0.0,
        "s_noise": 1.0,
        "sigma_min": 0.0,
        "sigma_max": 0.0,
        "rho": 0.0,
        "eta_noise_seed_delta": 0,
        "always_discard_next_to_last_sigma": False,
        "sgm_noise_multiplier": False,
        "uni_pc_variant": "bh1",
        "uni_pc_skip_type": "time_uniform",
        "uni_pc_order": 3,
        "uni_pc_lower_order_final": True,
        "sd_noise_schedule": "Default",
        "enable_prompt_comments": True,
        "infotext_skip_pasting": [],
        "infotext_styles": "Apply if any",
        "add_model_hash_to_info": True,
        "add_model_name_to_info": True,
        "add_user_name_to_info": False,
        "add_version_to_infotext": True,
        "disable_weights_auto_swap": True,
        "quicksettings_list": ["sd_model_checkpoint"],
        "disabled_extensions": [],
        "disable_all_extensions": "none",
    }
)
"""The A1111 1.10 settings ``GET /sdapi/v1/options`` reports, with A1111's defaults."""

RESTRICTED_OPTIONS = frozenset({"api_enable_requests", "api_forbid_local_requests", "api_useragent"})
"""Settings A1111 flags ``restrict_api``: silently ignored when set through the API."""

_NOT_HONOURED = (
    "eta_noise_seed_delta",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "s_min_uncond",
    "sigma_min",
    "sigma_max",
    "rho",
    "emphasis",
    "pad_cond_uncond",
    "token_merging_ratio",
    "token_merging_ratio_img2img",
    "token_merging_ratio_hr",
    "initial_noise_multiplier",
    "img2img_fix_steps",
    "inpainting_mask_weight",
    "sd_vae_encode_method",
    "sd_vae_decode_method",
    "use_old_scheduling",
    "always_discard_next_to_last_sigma",
    "tiling",
    "face_restoration",
)
"""Settings that change A1111's images but not this server's: a non-default value is reported in a note."""

# infotext label → the setting it overrides (A1111's ``infotext_to_setting_name_mapping`` and ``infotext=``
# labels of options); "Model hash" only while ``disable_weights_auto_swap`` is off.
_INFOTEXT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("Conditional mask weight", "inpainting_mask_weight"),
    ("Model hash", "sd_model_checkpoint"),
    ("ENSD", "eta_noise_seed_delta"),
    ("Schedule max sigma", "sigma_max"),
    ("Schedule min sigma", "sigma_min"),
    ("Schedule rho", "rho"),
    ("Noise multiplier", "initial_noise_multiplier"),
    ("Eta", "eta_ancestral"),
    ("Eta DDIM", "eta_ddim"),
    ("Sigma churn", "s_churn"),
    ("Sigma tmin", "s_tmin"),
    ("Sigma tmax", "s_tmax"),
    ("Sigma noise", "s_noise"),
    ("RNG", "randn_source"),
    ("NGMS", "s_min_uncond"),
    ("Pad conds", "pad_cond_uncond"),
    ("Emphasis", "emphasis"),
    ("Token merging ratio", "token_merging_ratio"),
    ("Token merging ratio hr", "token_merging_ratio_hr"),
    ("VAE", "sd_vae"),
    ("VAE Encoder", "sd_vae_encode_method"),
    ("VAE Decoder", "sd_vae_decode_method"),
)


@dataclass(frozen=True, slots=True)
class BuiltinScript:
    """An always-on script A1111 ships with. A1111's API does not run these scripts' setup (they configure
    the UI only), so their ``args`` are accepted and have no effect — here as there."""

    title: str
    is_img2img_only: bool = False
    args: tuple[Mapping[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.title.lower()


BUILTIN_SCRIPTS: tuple[BuiltinScript, ...] = (
    BuiltinScript(
        "Refiner",
        args=(
            {"label": "Refiner", "value": False},
            {"label": "Checkpoint", "value": "", "choices": []},
            {"label": "Switch at", "value": 0.8, "minimum": 0.01, "maximum": 1.0, "step": 0.01},
        ),
    ),
    BuiltinScript(
        "Seed",
        args=(
            {"label": "Seed", "value": -1},
            {"label": "Extra", "value": False},
            {"label": "Variation seed", "value": -1},
            {"label": "Variation strength", "value": 0.0, "minimum": 0, "maximum": 1, "step": 0.01},
            {"label": "Resize seed from width", "value": 0, "minimum": 0, "maximum": 2048, "step": 8},
            {"label": "Resize seed from height", "value": 0, "minimum": 0, "maximum": 2048, "step": 8},
        ),
    ),
    BuiltinScript(
        "Sampler",
        args=(
            {"label": "Sampling steps", "value": 20, "minimum": 1, "maximum": 150, "step": 1},
            {"label": "Sampling method", "value": SAMPLERS[0].name, "choices": [s.name for s in SAMPLERS]},
            {
                "label": "Schedule type",
                "value": SCHEDULERS[0].label,
                "choices": [s.label for s in SCHEDULERS],
            },
        ),
    ),
    BuiltinScript("Comments"),
)
"""The always-on scripts ``alwayson_scripts`` may name; any other name is A1111's 422 "Script '…' not found"."""

_SCRIPTS_BY_NAME = {script.name: script for script in BUILTIN_SCRIPTS}

_MASKED_CONTENT = {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3}
_OUTPUT_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_TITLE_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
_URL = re.compile(r"^https?://", re.IGNORECASE)


# ===================================================================== the registry, as A1111 names it


def checkpoint_title(model: ModelRecord) -> str:
    """A1111's checkpoint title: ``name [hash10]`` (just the name when the registry has no hash)."""
    return f"{model.name} [{model.short_hash}]" if model.sha256 else model.name


def model_name_of(model: ModelRecord) -> str:
    """A1111's ``model_name``: the name with path separators replaced by ``_``."""
    return model.name.replace("/", "_").replace("\\", "_")


def _file_names(model: ModelRecord) -> tuple[str, str]:
    """The source's file name and its stem (A1111 accepts both as checkpoint aliases)."""
    base = re.split(r"[/\\]", model.source.split("?", 1)[0].rstrip("/"))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return base, stem


@dataclass(frozen=True, slots=True)
class Catalog:
    """The registry entries a request may name: checkpoints and VAEs."""

    checkpoints: Sequence[ModelRecord] = ()
    vaes: Sequence[ModelRecord] = ()

    def checkpoint(self, alias: str | None) -> ModelRecord | None:
        """The checkpoint an A1111 alias names: the title ``name [hash]``, the registry name, A1111's
        ``model_name``, the file name or its stem, the 10-digit short hash or the full sha256."""
        if not alias or not alias.strip():
            return None
        wanted = alias.strip()
        titled = _TITLE_HASH.match(wanted)
        candidates = [wanted]
        if titled:
            candidates.append(titled.group("name"))
        for key in candidates:
            for model in self.checkpoints:
                if key in (model.name, checkpoint_title(model), model_name_of(model), *_file_names(model)):
                    return model
            if key.lower().endswith((".safetensors", ".ckpt")):
                stem = key.rsplit(".", 1)[0]
                for model in self.checkpoints:
                    if stem in (model.name, model_name_of(model)):
                        return model
        lowered = wanted.lower()
        if re.fullmatch(r"[0-9a-f]{10}|[0-9a-f]{64}", lowered):
            for model in self.checkpoints:
                if model.sha256 and (model.sha256 == lowered or model.short_hash == lowered):
                    return model
        return None

    def vae(self, name: str | None) -> ModelRecord | None:
        """The VAE called ``name`` (registry name, file name or stem)."""
        if not name:
            return None
        for model in self.vaes:
            if name in (model.name, model_name_of(model), *_file_names(model)):
                return model
        return None


# ===================================================================== the mapped request


@dataclass(slots=True)
class MappedRequest:
    """An A1111 request turned into a job spec, with what ``info`` needs to answer it."""

    kind: JobKind
    spec: GenerationSpec
    task_id: str
    parameters: dict[str, Any]
    prompt: str
    negative_prompt: str
    styles: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    denoising_strength: float
    seed_resize_from: tuple[int, int]
    send_images: bool
    restore_afterwards: bool
    override_settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """What ``info`` needs of one stored output image."""

    seed: int | None
    infotext: str | None


def new_task_id(kind: JobKind, rng: random.Random) -> str:
    """A1111's task id for a request without ``force_task_id``: ``task(txt2img-XXXXXXX)``."""
    suffix = "".join(rng.choices(string.ascii_uppercase + string.digits, k=7))
    return f"task({kind.value}-{suffix})"


def effective_options(tenant_options: Mapping[str, Any]) -> dict[str, Any]:
    """A1111's defaults overlaid with a tenant's settings (``GET /sdapi/v1/options``). A stored value that
    is not a valid setting (a NaN, text that cannot be encoded, the wrong type — stored before these were
    refused) falls back to the default, so one bad value never breaks the settings for good."""
    merged = dict(OPTION_DEFAULTS)
    for key, value in tenant_options.items():
        if key not in OPTION_DEFAULTS:
            continue
        try:
            _check_option_type(key, value)
        except ValidationError:
            continue
        merged[key] = value
    return merged


MAX_OPTION_BYTES = 64 * 1024
"""The largest value ``POST /sdapi/v1/options`` stores for one setting (JSON-encoded)."""


def validate_option_updates(
    updates: Mapping[str, Any], catalog: Catalog, *, strict_checkpoint: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """The settings of a ``POST /sdapi/v1/options`` body (or of ``override_settings`` kept afterwards) that
    are stored, and the keys that are ignored.

    Settings A1111 does not have, and the ``restrict_api`` ones, are ignored (A1111 fails on the former and
    skips the latter). A value must have the type of the setting's default. ``sd_model_checkpoint`` must name
    a registered checkpoint (A1111: "model '…' not found") and is stored as its title; without
    ``strict_checkpoint`` an unknown one is ignored instead, as A1111 drops an unknown checkpoint override.
    """
    accepted: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in updates.items():
        if key not in OPTION_DEFAULTS or key in RESTRICTED_OPTIONS or key == "sd_checkpoint_hash":
            ignored.append(key)
            continue
        if key == "sd_model_checkpoint" and value is not None:
            found = catalog.checkpoint(str(value))
            if found is None:
                if strict_checkpoint:
                    raise ValidationError(f"model {value!r} not found", field=key)
                ignored.append(key)
                continue
            value = checkpoint_title(found)
        _check_option_type(key, value)
        accepted[key] = value
    return accepted, ignored


def _check_option_type(key: str, value: Any) -> None:
    default = OPTION_DEFAULTS[key]
    if default is None:
        ok = value is None or isinstance(value, str)
        kind = "a string or null"
    elif isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, list):
        ok, kind = isinstance(value, list), "a list"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise ValidationError(f"setting {key} must be {kind}", field=key)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ValidationError(f"setting {key} must be a finite number", field=key) from exc
    if len(encoded) > MAX_OPTION_BYTES:
        raise ValidationError(f"setting {key} is larger than {MAX_OPTION_BYTES} bytes", field=key)
    for text in _strings(value):
        problem = text_problem(text)
        if problem is not None:
            raise ValidationError(f"setting {key} {problem}", field=key)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    return []


_NAME_FIELDS = (
    "sampler_name",
    "sampler_index",
    "scheduler",
    "refiner_checkpoint",
    "script_name",
    "hr_upscaler",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
)
_PROMPT_FIELDS = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")


def check_request_sizes(request: ProcessingRequest, limits: LimitsLike) -> None:
    """Bound the text of an A1111 request before it is mapped (names are matched against tables, prompts
    parsed): prompts, names, styles and init images over the deployment's limits are a 422 naming the field."""
    for name in _PROMPT_FIELDS:
        value = getattr(request, name, None)
        prompts = [value] if isinstance(value, str) else list(value or [])
        if len(prompts) > limits.max_images_per_job:
            raise LimitExceeded(
                f"{name} has {len(prompts)} prompts, the limit is {limits.max_images_per_job}", field=name
            )
        for prompt in prompts:
            if len(prompt) > limits.max_prompt_chars:
                raise LimitExceeded(
                    f"{name} has {len(prompt)} characters, the limit is {limits.max_prompt_chars}", field=name
                )
    for name in _NAME_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and len(value) > limits.max_name_chars:
            raise LimitExceeded(
                f"{name} has {len(value)} characters, the limit is {limits.max_name_chars}", field=name
            )
    styles = request.styles or []
    if len(styles) > limits.max_styles:
        raise LimitExceeded(
            f"styles has {len(styles)} entries, the limit is {limits.max_styles}", field="styles"
        )
    for index, style in enumerate(styles):
        if len(style) > limits.max_style_chars:
            raise LimitExceeded(
                f"styles.{index} has {len(style)} characters, the limit is {limits.max_style_chars}",
                field=f"styles.{index}",
            )
    if isinstance(request, Img2ImgRequest) and len(request.init_images or []) > limits.max_input_images:
        raise LimitExceeded(
            f"init_images has {len(request.init_images or [])} images, the limit is {limits.max_input_images}",
            field="init_images",
        )


def map_request(
    kind: JobKind,
    request: ProcessingRequest,
    *,
    options: Mapping[str, Any],
    catalog: Catalog,
    rng: random.Random,
) -> MappedRequest:
    """Turn an A1111 txt2img/img2img request into a generation spec (see the module docstring).

    ``options`` are the tenant's settings (``POST /sdapi/v1/options``), ``catalog`` the registry's checkpoints
    and VAEs, ``rng`` the source of random seeds and task ids. Does not check limits or the registry's LoRAs:
    the job system does that for every job.
    """
    notes: list[str] = []
    settings = effective_options(options)
    request = request.model_copy(deep=True)
    override = dict(request.override_settings or {})
    if request.infotext:
        _apply_infotext(kind, request, override, settings, notes)
    for key in RESTRICTED_OPTIONS & override.keys():
        del override[key]
    settings.update(override)

    _check_scripts(request)
    values: dict[str, Any] = {}
    prompt = _one_prompt(request.prompt, "prompt")
    negative = _one_prompt(request.negative_prompt, "negative_prompt")
    # A1111 keeps <lora:…> tags in the prompts it reports; disable_extra_networks only stops applying them
    values["prompt"] = extract_extra_networks(prompt)[0] if request.disable_extra_networks else prompt
    values["negative_prompt"] = negative
    styles = list(request.styles or [])
    if styles:
        notes.append(f"no prompt styles are defined on this server; ignored styles: {', '.join(styles)}")
    values["styles"] = styles

    batch_size = _int(request.batch_size, 1)
    n_iter = _int(request.n_iter, 1)
    seed = _seed(request.seed, rng)
    subseed = _seed(request.subseed, rng)
    strength = _float(request.subseed_strength, 0.0)
    values.update(seed=seed, subseed=subseed, subseed_strength=strength)
    values.update(
        steps=_int(request.steps, 50),
        cfg_scale=_float(request.cfg_scale, 7.0),
        width=_int(request.width, 512),
        height=_int(request.height, 512),
        n_iter=n_iter,
    )
    resize_from = (_int(request.seed_resize_from_w, -1), _int(request.seed_resize_from_h, -1))
    if resize_from[0] > 0 and resize_from[1] > 0:
        notes.append("seed_resize_from_w/h is not supported; the seed was used at the requested size")

    sampler_name, scheduler = _sampler(request, notes)
    values["sampler_name"] = sampler_name
    values["scheduler"] = scheduler_by_name(scheduler).name
    values.update(_models(settings, override, options, catalog, notes))
    values["clip_skip"] = _clip_skip(settings.get("CLIP_stop_at_last_layers"), notes)
    values["eta"] = _eta(request.eta, sampler_name, settings)
    fmt = str(settings.get("samples_format") or "png").lower()
    if fmt not in _OUTPUT_FORMATS:
        notes.append(f"samples_format {fmt!r} is not supported; wrote PNG")
    values["output_format"] = _OUTPUT_FORMATS.get(fmt, "png")
    values["output_quality"] = _quality(settings.get("jpeg_quality"), notes)
    refiner = (request.refiner_checkpoint or "").strip()
    if refiner and refiner != "None":
        found = catalog.checkpoint(refiner)
        if found is None:
            raise ValidationError(
                f"Could not find checkpoint with name {refiner}", field="refiner_checkpoint"
            )
        values["refiner_checkpoint"] = found.name
        values["refiner_switch_at"] = _float(request.refiner_switch_at, 0.8)
    _note_unsupported(request, settings, notes)

    denoising = _float(request.denoising_strength, 0.75)
    if isinstance(request, Txt2ImgRequest):
        _hires(request, values, denoising, notes)
    elif isinstance(request, Img2ImgRequest):
        batch_size = _img2img(request, values, batch_size, notes)
        values["denoising_strength"] = denoising
    values["batch_size"] = batch_size

    spec = _spec(values)
    count = batch_size * n_iter
    all_seeds = [seed] * count if strength else [seed + i for i in range(count)]
    parameters = request.model_dump()
    parameters["override_settings"] = override or request.override_settings
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    return MappedRequest(
        kind=kind,
        spec=spec,
        task_id=request.force_task_id or new_task_id(kind, rng),
        parameters=parameters,
        prompt=prompt,
        negative_prompt=negative,
        styles=styles,
        all_seeds=all_seeds,
        all_subseeds=[subseed + i for i in range(count)],
        denoising_strength=denoising,
        seed_resize_from=(max(0, resize_from[0]), max(0, resize_from[1])),
        send_images=request.send_images is not False,
        restore_afterwards=request.override_settings_restore_afterwards is not False,
        override_settings=override,
        notes=notes,
    )


# ===================================================================== pieces of map_request


def _int(value: int | None, default: int) -> int:
    return default if value is None else int(value)


def _float(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def _seed(value: int | None, rng: random.Random) -> int:
    if value is None or value == -1:
        return rng.randrange(SEED_RANGE)
    return value


def _one_prompt(value: str | list[str] | None, field_name: str) -> str:
    """A prompt, or a list of prompts that all say the same (one job has one prompt)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    distinct = set(value)
    if len(distinct) > 1:
        raise ValidationError(
            f"{field_name}: a different prompt per image is not supported; send one request per prompt",
            field=field_name,
        )
    return value[0] if value else ""


def _check_scripts(request: ProcessingRequest) -> None:
    """A1111's answers for scripts this server does not have: 422 "Script '…' not found"."""
    if request.script_name:
        raise ValidationError(f"Script '{request.script_name}' not found", field="script_name")
    for name in request.alwayson_scripts or {}:
        if name.lower() not in _SCRIPTS_BY_NAME:
            raise ValidationError(f"Script '{name}' not found", field="alwayson_scripts")


def _sampler(request: ProcessingRequest, notes: list[str]) -> tuple[str, str]:
    """A1111's ``get_sampler_and_scheduler(sampler_name or sampler_index, scheduler)``, with a note when
    A1111's fallback replaced a name that does not exist."""
    asked = request.sampler_name or request.sampler_index
    sampler, scheduler = get_sampler_and_scheduler(asked, request.scheduler)
    if asked and not _sampler_exists(asked):
        hint = ""
        try:
            found, _ = resolve_sampler(asked)
            hint = f" (did you mean {found.name!r}?)"
        except UnknownNameError as exc:
            if exc.suggestions:
                hint = f" (did you mean {', '.join(repr(s) for s in exc.suggestions)}?)"
        notes.append(f"sampler {asked!r} not found; used {sampler!r} as A1111 does{hint}")
    if request.scheduler and not _scheduler_exists(request.scheduler):
        notes.append(f"scheduler {request.scheduler!r} not found; used {scheduler!r} as A1111 does")
    return sampler, scheduler


def _scheduler_exists(name: str) -> bool:
    try:
        scheduler_by_name(name)
    except KeyError:
        return False
    return True


def _sampler_exists(name: str) -> bool:
    try:
        sampler_by_name(name)
        return True
    except KeyError:
        pass
    for scheduler in SCHEDULERS:
        for option in (scheduler.label, scheduler.name, *scheduler.aliases):
            if name.endswith(" " + option):
                try:
                    sampler_by_name(name[: -(len(option) + 1)])
                    return True
                except KeyError:
                    continue
    return False


def _models(
    settings: Mapping[str, Any],
    override: Mapping[str, Any],
    tenant: Mapping[str, Any],
    catalog: Catalog,
    notes: list[str],
) -> dict[str, Any]:
    """Checkpoint and VAE from the effective settings. An override naming an unknown checkpoint is dropped,
    as A1111 drops it (the tenant's own checkpoint is used); an unknown VAE falls back to Automatic."""
    values: dict[str, Any] = {"model": None, "vae": None}
    wanted = settings.get("sd_model_checkpoint")
    if wanted:
        found = catalog.checkpoint(str(wanted))
        if found is None and "sd_model_checkpoint" in override:
            notes.append(f"checkpoint {wanted!r} not found in the registry; the override was ignored")
            wanted = tenant.get("sd_model_checkpoint")
            found = catalog.checkpoint(str(wanted)) if wanted else None
        if found is None and wanted:
            notes.append(f"checkpoint {wanted!r} is no longer in the registry; the worker's default was used")
        values["model"] = found.name if found else None
    vae = settings.get("sd_vae")
    if vae not in (None, "", "Automatic", "None"):
        found_vae = catalog.vae(str(vae))
        if found_vae is None:
            notes.append(f"VAE {vae!r} not found in the registry; used Automatic")
        values["vae"] = found_vae.name if found_vae else None
    return values


def _clip_skip(value: Any, notes: list[str]) -> int:
    try:
        number = int(value) if value is not None else 1
    except (TypeError, ValueError):
        notes.append(f"CLIP_stop_at_last_layers {value!r} is not a number; used 1")
        return 1
    clamped = min(12, max(1, number))
    if clamped != number:
        notes.append(f"CLIP_stop_at_last_layers {number} is outside 1–12; used {clamped}")
    return clamped


def _quality(value: Any, notes: list[str]) -> int:
    try:
        number = int(value) if value is not None else 80
    except (TypeError, ValueError):
        notes.append(f"jpeg_quality {value!r} is not a number; used 80")
        return 80
    return min(100, max(1, number))


def _eta(value: float | None, sampler: str, settings: Mapping[str, Any]) -> float | None:
    """The request's ``eta``, else the ``eta_ddim``/``eta_ancestral`` setting when it is not A1111's default."""
    if value is not None:
        return float(value)
    info = sampler_by_name(sampler)
    if info.family == "timesteps":
        key = "eta_ddim"
    elif info.uses_ensd:
        key = "eta_ancestral"
    else:
        return None
    chosen = settings.get(key)
    if chosen is None or chosen == OPTION_DEFAULTS[key]:
        return None
    try:
        return float(chosen)
    except (TypeError, ValueError):
        return None


def _note_unsupported(request: ProcessingRequest, settings: Mapping[str, Any], notes: list[str]) -> None:
    if request.restore_faces:
        notes.append("restore_faces is not supported; faces were not restored")
    if request.tiling:
        notes.append("tiling is not supported; the image does not tile")
    for name in ("s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise"):
        value = getattr(request, name)
        if value is not None and value != OPTION_DEFAULTS[name]:
            notes.append(f"{name} is not supported; ignored")
    changed = [
        f"{key}={settings[key]!r}"
        for key in _NOT_HONOURED
        if key in settings and settings[key] != OPTION_DEFAULTS.get(key)
    ]
    if changed:
        notes.append("settings without effect on this server: " + ", ".join(changed))


def _hires(request: Txt2ImgRequest, values: dict[str, Any], denoising: float, notes: list[str]) -> None:
    if not request.enable_hr:
        return
    values["enable_hr"] = True
    width, height = values["width"], values["height"]
    first_w, first_h = _int(request.firstphase_width, 0), _int(request.firstphase_height, 0)
    resize_x, resize_y = _int(request.hr_resize_x, 0), _int(request.hr_resize_y, 0)
    if first_w or first_h:  # pre-1.0 clients: width/height are the final size, firstphase_* the first pass
        resize_x, resize_y = width, height
        values["width"], values["height"] = first_w or width, first_h or height
    upscaler = request.hr_upscaler or "Latent"
    if upscaler not in LATENT_UPSCALE_MODES and upscaler not in PIXEL_UPSCALERS:
        raise ValidationError(f"could not find upscaler named {upscaler}", field="hr_upscaler")
    values.update(
        hr_scale=_float(request.hr_scale, 2.0),
        hr_upscaler=upscaler,
        hr_second_pass_steps=_int(request.hr_second_pass_steps, 0),
        hr_resize_x=resize_x,
        hr_resize_y=resize_y,
        hr_denoising_strength=denoising,
    )
    unsupported = {
        "hr_checkpoint_name": ("", "Use same checkpoint"),
        "hr_sampler_name": ("", "Use same sampler"),
        "hr_scheduler": ("", "Use same scheduler"),
        "hr_prompt": ("",),
        "hr_negative_prompt": ("",),
    }
    for name, same in unsupported.items():
        value = getattr(request, name)
        if value is not None and value not in same:
            notes.append(f"{name} is not supported; the hires pass used the first pass's value")


def _img2img(request: Img2ImgRequest, values: dict[str, Any], batch_size: int, notes: list[str]) -> int:
    """img2img fields; returns the batch size (A1111: N ≤ batch_size init images make the batch N)."""
    images = request.init_images
    if not images:
        raise NotFound("Init image not found", field="init_images")
    if len(images) > 1:
        if len(images) > batch_size:
            raise ValidationError(
                f"bad number of images passed: {len(images)}; expecting {batch_size} or less",
                field="init_images",
            )
        batch_size = len(images)
    for index, image in enumerate(images):
        if _URL.match(image.strip()):
            raise ValidationError(
                "image URLs are not fetched by this server; send the image as base64",
                field=f"init_images.{index}",
            )
    if request.mask and _URL.match(request.mask.strip()):
        raise ValidationError(
            "image URLs are not fetched by this server; send the mask as base64", field="mask"
        )
    values["init_images"] = list(images)
    values["mask"] = request.mask or None
    values["resize_mode"] = _int(request.resize_mode, 0)
    blur_x, blur_y = _int(request.mask_blur_x, 4), _int(request.mask_blur_y, 4)
    if request.mask_blur is not None:
        blur_x = blur_y = request.mask_blur
    if blur_x != blur_y:
        notes.append(f"separate mask blur for x and y is not supported; used {max(blur_x, blur_y)} for both")
    values["mask_blur"] = max(blur_x, blur_y)
    values["inpainting_fill"] = _int(request.inpainting_fill, 0)
    values["inpaint_full_res"] = request.inpaint_full_res is not False
    values["inpaint_full_res_padding"] = _int(request.inpaint_full_res_padding, 0)
    values["inpainting_mask_invert"] = bool(request.inpainting_mask_invert)
    if request.initial_noise_multiplier not in (None, 1.0):
        notes.append("initial_noise_multiplier is not supported; used 1.0")
    if request.latent_mask:
        notes.append("latent_mask is not supported; the mask was used")
    return batch_size


def _spec(values: dict[str, Any]) -> GenerationSpec:
    """Build the spec; its own validation errors come back as A1111-style 422s naming the field."""
    try:
        return GenerationSpec.model_validate(values)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationError(f"{name}: {first['msg']}", field=name) from exc


# ===================================================================== infotext


_Converter = Callable[[Any], Any]


def _to_int(value: Any) -> int:
    return int(str(value))


def _to_float(value: Any) -> float:
    return float(str(value))


_COMMON_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("prompt", "Prompt", str),
    ("negative_prompt", "Negative prompt", str),
    ("steps", "Steps", _to_int),
    ("cfg_scale", "CFG scale", _to_float),
    ("seed", "Seed", _to_int),
    ("subseed", "Variation seed", _to_int),
    ("subseed_strength", "Variation seed strength", _to_float),
    ("width", "Size-1", _to_int),
    ("height", "Size-2", _to_int),
    ("batch_size", "Batch size", _to_int),
    ("denoising_strength", "Denoising strength", _to_float),
)
_TXT2IMG_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("hr_scale", "Hires upscale", _to_float),
    ("hr_upscaler", "Hires upscaler", str),
    ("hr_second_pass_steps", "Hires steps", _to_int),
    ("hr_resize_x", "Hires resize-1", _to_int),
    ("hr_resize_y", "Hires resize-2", _to_int),
    ("hr_checkpoint_name", "Hires checkpoint", str),
    ("hr_sampler_name", "Hires sampler", str),
    ("hr_scheduler", "Hires schedule type", str),
    ("hr_prompt", "Hires prompt", str),
    ("hr_negative_prompt", "Hires negative prompt", str),
)
_IMG2IMG_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("image_cfg_scale", "Image CFG scale", _to_float),
    ("mask_blur", "Mask blur", _to_int),
    ("inpainting_mask_invert", "Mask mode", lambda v: 1 if v == "Inpaint not masked" else 0),
    ("inpainting_fill", "Masked content", lambda v: _MASKED_CONTENT[str(v)]),
    ("inpaint_full_res", "Inpaint area", lambda v: v == "Only masked"),
    ("inpaint_full_res_padding", "Masked area padding", _to_int),
)


def _apply_infotext(
    kind: JobKind,
    request: ProcessingRequest,
    override: dict[str, Any],
    settings: Mapping[str, Any],
    notes: list[str],
) -> None:
    """A1111's ``apply_infotext``: fields the client did not set come from the infotext; the settings it
    mentions become overrides unless the request overrides them already or they equal the current value."""
    assert request.infotext is not None
    params = parse_infotext(request.infotext)
    explicit = set(request.model_fields_set)
    fields = _COMMON_FIELDS + (_TXT2IMG_FIELDS if kind == JobKind.TXT2IMG else _IMG2IMG_FIELDS)
    for name, label, convert in fields:
        if name in explicit or label not in params:
            continue
        try:
            setattr(request, name, convert(params[label]))
        except (ValueError, KeyError):
            notes.append(f"infotext {label}: {params[label]!r} could not be read; ignored")
    if "sampler_name" not in explicit and "scheduler" not in explicit and "Sampler" in params:
        sampler, scheduler = infotext_sampler_and_scheduler(params)
        request.sampler_name = sampler
        request.scheduler = None if scheduler == "Automatic" else scheduler
    if isinstance(request, Txt2ImgRequest) and "enable_hr" not in explicit:
        # A1111's rule, word for word (its parser always adds "Hires resize-1", so Denoising strength decides)
        request.enable_hr = "Denoising strength" in params and (
            "Hires upscale" in params or "Hires upscaler" in params or "Hires resize-1" in params
        )
    auto_swap = not settings.get("disable_weights_auto_swap", True)
    for label, setting in _INFOTEXT_SETTINGS:
        if label not in params or setting in override:
            continue
        if setting == "sd_model_checkpoint" and not auto_swap:
            continue
        value = _cast_setting(setting, params[label])
        if value is None or value == settings.get(setting):
            continue
        override[setting] = value


def _cast_setting(setting: str, value: Any) -> Any:
    """A1111's ``opts.cast_value``: to the type of the setting's default."""
    default = OPTION_DEFAULTS.get(setting)
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value) == "True"
        if isinstance(default, int):
            return int(float(str(value)))
        if isinstance(default, float):
            return float(str(value))
    except ValueError:
        return None
    return str(value)


# ===================================================================== info


def build_info(
    mapped: MappedRequest,
    outputs: Sequence[OutputRecord],
    *,
    job_timestamp: str,
    version: str,
    model: ModelRecord | None,
    vae: ModelRecord | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A1111's ``Processed.js()`` for a finished job, as a dict (the API sends ``json.dumps`` of it).

    Seeds, model, VAE and version come from what the worker wrote into the images (their seeds and
    infotexts); the request's values (and the registry's ``model``/``vae``) are the fallback. ``extra`` is
    added under the key ``sdfleet`` together with the notes. Serialise it with ``json.dumps(…,
    default=lambda _: None)`` as A1111 does (objects that cannot be serialised become null).
    """
    spec = mapped.spec
    count = len(mapped.all_seeds)
    first = _first_params(outputs)
    seeds = [o.seed for o in outputs]
    all_seeds = [s for s in seeds if s is not None] if outputs and None not in seeds else mapped.all_seeds
    all_subseeds = mapped.all_subseeds
    if first is not None and first.variation_seed is not None:
        parsed = [_variation_seed(o.infotext) for o in outputs]
        if None not in parsed:
            all_subseeds = [s for s in parsed if s is not None]
    model_name = first.model if first and first.model else (model.name if model else None)
    model_hash = first.model_hash if first and first.model_hash else (model.short_hash if model else None)
    vae_name = first.vae if first and first.vae else (vae.name if vae else None)
    vae_hash = first.vae_hash if first and first.vae_hash else (vae.short_hash if vae else None)
    clip_skip = first.clip_skip if first is not None else spec.clip_skip
    info: dict[str, Any] = {
        "prompt": mapped.prompt,
        "all_prompts": [mapped.prompt] * count,
        "negative_prompt": mapped.negative_prompt,
        "all_negative_prompts": [mapped.negative_prompt] * count,
        "seed": all_seeds[0] if all_seeds else spec.seed,
        "all_seeds": all_seeds,
        "subseed": all_subseeds[0] if all_subseeds else spec.subseed,
        "all_subseeds": all_subseeds,
        "subseed_strength": spec.subseed_strength,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": spec.sampler_name,
        "cfg_scale": spec.cfg_scale,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name,
        "sd_model_hash": model_hash or None,
        "sd_vae_name": vae_name,
        "sd_vae_hash": vae_hash or None,
        "seed_resize_from_w": mapped.seed_resize_from[0],
        "seed_resize_from_h": mapped.seed_resize_from[1],
        "denoising_strength": mapped.denoising_strength,
        "extra_generation_params": dict(first.extra) if first is not None else {},
        "index_of_first_image": 0,
        "infotexts": [o.infotext or "" for o in outputs],
        "styles": mapped.styles,
        "job_timestamp": job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False if mapped.kind == JobKind.TXT2IMG else None,
        "version": first.version if first and first.version else version,
        "sdfleet": {**extra, "task_id": mapped.task_id, "notes": list(mapped.notes)},
    }
    return info


def _first_params(outputs: Sequence[OutputRecord]) -> InfotextParams | None:
    for output in outputs[:1]:
        if output.infotext:
            try:
                return InfotextParams.from_infotext(output.infotext)
            except InfotextError:
                return None
    return None


def _variation_seed(infotext: str | None) -> int | None:
    if not infotext:
        return None
    try:
        return InfotextParams.from_infotext(infotext).variation_seed
    except InfotextError:
        return None
