"""A1111's settings table: every 1.10 key with its default and type; a write is checked against the type of
its key (the error names the key); unknown keys are ignored, as before."""

from __future__ import annotations

from typing import Any

import pytest

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.options import (
    EFFECTIVE_SETTINGS,
    OPTION_DEFAULTS,
    effective_options,
    validate_option_updates,
)
from sdfleet.a1111.settings_table import SETTINGS_TABLE, setting_kind
from sdfleet.errors import ValidationError

EMPTY = Catalog(checkpoints=(), vaes=())


def test_the_table_has_a1111s_keys_and_defaults() -> None:
    assert OPTION_DEFAULTS is SETTINGS_TABLE
    assert len(SETTINGS_TABLE) > 300
    expected: dict[str, Any] = {
        "samples_save": True,
        "samples_format": "png",
        "send_seed": True,
        "send_size": True,
        "CLIP_stop_at_last_layers": 1,
        "sd_model_checkpoint": None,
        "sd_vae": "Automatic",
        "eta_noise_seed_delta": 0,
        "img2img_fix_steps": False,
        "upscaler_for_img2img": None,
        "face_restoration_model": "CodeFormer",
        "code_former_weight": 0.5,
        "ESRGAN_tile": 192,
        "ESRGAN_tile_overlap": 8,
        "show_progressbar": True,
        "live_previews_enable": True,
        "quicksettings_list": ["sd_model_checkpoint"],
        "outdir_txt2img_samples": "outputs/txt2img-images",
        "grid_background_color": "#ffffff",
        "eta_ancestral": 1.0,
        "lora_in_memory_limit": 0,
        "hypertile_max_tile_vae": 128,
        "sd_checkpoint_hash": "",
    }
    for key, value in expected.items():
        assert SETTINGS_TABLE[key] == value and type(SETTINGS_TABLE[key]) is type(value), key
    assert set(SETTINGS_TABLE) >= EFFECTIVE_SETTINGS


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("samples_save", "bool"),
        ("ESRGAN_tile", "int"),
        ("code_former_weight", "number"),
        ("img_max_size_mp", "number"),
        ("samples_format", "str"),
        ("hide_samplers", "list"),
        ("upscaler_for_img2img", "nullable_str"),
    ],
)
def test_each_key_has_the_kind_of_its_default(key: str, kind: str) -> None:
    assert setting_kind(key) == kind


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("ESRGAN_tile", "192", "must be an integer"),
        ("ESRGAN_tile", 19.5, "must be an integer"),
        ("send_seed", 1, "must be true or false"),
        ("code_former_weight", "half", "must be a number"),
        ("face_restoration_model", 3, "must be a string"),
        ("realesrgan_enabled_models", "R-ESRGAN 4x+", "must be a list of strings"),
        ("realesrgan_enabled_models", [1, 2], "must be a list of strings"),
        ("upscaler_for_img2img", 4, "must be a string or null"),
    ],
)
def test_a_wrong_type_is_refused_naming_the_key(key: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_option_updates({key: value}, EMPTY)
    assert caught.value.field == key
    assert key in caught.value.message and words in caught.value.message


def test_stored_only_keys_are_accepted_and_read_back_unknown_ones_ignored() -> None:
    updates = {
        "ESRGAN_tile": 256,
        "img_max_size_mp": 12.5,
        "upscaler_for_img2img": "Lanczos",
        "show_progressbar": False,
        "hide_samplers": ["DDIM"],
        "not_an_a1111_setting": 3,
        "api_useragent": "x",  # restrict_api: ignored
    }
    accepted, ignored = validate_option_updates(updates, EMPTY)
    assert accepted == {
        "ESRGAN_tile": 256,
        "img_max_size_mp": 12.5,
        "upscaler_for_img2img": "Lanczos",
        "show_progressbar": False,
        "hide_samplers": ["DDIM"],
    }
    assert sorted(ignored) == ["api_useragent", "not_an_a1111_setting"]
    merged = effective_options({**accepted, "not_an_a1111_setting": 3})
    assert merged["ESRGAN_tile"] == 256 and merged["show_progressbar"] is False
    assert "not_an_a1111_setting" not in merged
    assert set(merged) == set(SETTINGS_TABLE)
