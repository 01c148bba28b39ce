"""From an A1111 API request to a :class:`~sdfleet.domain.GenerationSpec` (:func:`map_request`, the request
size checks, the built-in scripts, infotext filling). The registry as A1111 names it lives in
:mod:`~sdfleet.a1111.catalog`, the settings in :mod:`~sdfleet.a1111.options`, the finished job's ``info`` in
:mod:`~sdfleet.a1111.info`. Pure: no I/O, no web framework; the caller passes in the tenant's settings, the registry
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

import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from sdfleet.a1111.api import Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.controlnet import SCRIPT_NAMES as CONTROLNET_SCRIPTS
from sdfleet.a1111.controlnet import controlnet_units
from sdfleet.a1111.errors import UnknownNameError
from sdfleet.a1111.info import MappedRequest
from sdfleet.a1111.infotext import parse_infotext
from sdfleet.a1111.options import (
    OPTION_DEFAULTS,
    RESTRICTED_OPTIONS,
    effective_options,
)
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
from sdfleet.domain import GenerationSpec, JobKind, LimitsLike
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.specs.upscale import LATENT_UPSCALE_MODES, PIXEL_UPSCALERS, is_builtin_hires_upscaler

__all__ = [
    "BUILTIN_SCRIPTS",
    "LATENT_UPSCALE_MODES",
    "PIXEL_UPSCALERS",
    "SEED_RANGE",
    "BuiltinScript",
    "check_request_sizes",
    "map_request",
    "new_task_id",
]

SEED_RANGE = 4294967294
"""A1111 draws a random seed with ``random.randrange(4294967294)``."""


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
_URL = re.compile(r"^https?://", re.IGNORECASE)


def new_task_id(kind: JobKind, rng: random.Random) -> str:
    """A1111's task id for a request without ``force_task_id``: ``task(txt2img-XXXXXXX)``."""
    suffix = "".join(rng.choices(string.ascii_uppercase + string.digits, k=7))
    return f"task({kind.value}-{suffix})"


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
    units = controlnet_units(request.alwayson_scripts, catalog, notes)
    if units:
        values["controlnet"] = [unit.model_dump() for unit, _ in units]
    if request.restore_faces:
        values.update(_faces(settings, catalog, notes))

    denoising = _float(request.denoising_strength, 0.75)
    if isinstance(request, Txt2ImgRequest):
        _hires(request, values, denoising, notes, catalog)
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
        unit_fields=[path for _, path in units],
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
        if name.lower() not in _SCRIPTS_BY_NAME and name.lower() not in CONTROLNET_SCRIPTS:
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


def _faces(settings: Mapping[str, Any], catalog: Catalog, notes: list[str]) -> dict[str, Any]:
    """``restore_faces``: the registered restorer of the family A1111's ``face_restoration_model`` setting
    names (CodeFormer by default; any registered one otherwise), at ``code_former_weight``."""
    family = str(settings.get("face_restoration_model") or "CodeFormer").lower()
    found = catalog.face_restorer(family)
    if found is None:
        notes.append(
            "restore_faces: no face restorer is registered (sdfleet models add NAME FILE --kind face_restorer); "
            "faces were not restored"
        )
        return {}
    if found.arch != family:
        notes.append(f"restore_faces: no {family} restorer is registered; used {found.name} ({found.arch})")
    weight = _float(settings.get("code_former_weight"), 0.5)
    return {
        "restore_faces": True,
        "face_restorer": found.name,
        "face_restorer_weight": min(1.0, max(0.0, weight)),
    }


def _note_unsupported(request: ProcessingRequest, settings: Mapping[str, Any], notes: list[str]) -> None:
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


def _hires(
    request: Txt2ImgRequest, values: dict[str, Any], denoising: float, notes: list[str], catalog: Catalog
) -> None:
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
    if not is_builtin_hires_upscaler(upscaler):  # a registered net, by any name A1111 would know it by
        found = catalog.upscaler(upscaler)
        if found is None:
            raise ValidationError(f"could not find upscaler named {upscaler}", field="hr_upscaler")
        upscaler = found.name
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
