"""A1111's settings (``/sdapi/v1/options``): the defaults A1111 1.10 reports, a tenant's settings
overlaid on them, and the checks a stored or overriding value must pass."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sdfleet.a1111.catalog import Catalog, checkpoint_title
from sdfleet.errors import ValidationError
from sdfleet.validation import text_problem

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
