"""Tests for writing and parsing A1111 infotext (the PNG ``parameters`` text)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdfleet.a1111 import (
    InfotextError,
    InfotextParams,
    format_hashes,
    format_infotext,
    infotext_sampler_and_scheduler,
    parse_hashes,
    parse_infotext,
    quote,
    unquote,
)

# Realistic infotexts, in the shapes A1111 versions wrote them.

SAMPLE_V110_LORA_HIRES = """\
masterpiece, best quality, 1girl, solo, (detailed eyes:1.2), <lora:add_detail:0.6>, looking at viewer
Negative prompt: easynegative, (worst quality, low quality:1.4), nsfw
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 2380469321, Size: 512x768, \
Model hash: 7f96a1a9ca, Model: anything-v5-PrtRE, VAE hash: 735e4c3a44, \
VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, \
Hires steps: 14, Hires upscaler: R-ESRGAN 4x+ Anime6B, Lora hashes: "add_detail: 7c6bad76eb54", \
TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1"""

SAMPLE_2022 = """\
a photograph of an astronaut riding a horse
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"""

SAMPLE_PRE_19_COMBINED_SAMPLER = """\
[forest:city:0.4], cinematic lighting, ((sunset))
Negative prompt: blurry
Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 768x512, Model hash: e6e99610c4, \
Model: deliberate_v2, ENSD: 31337, Version: v1.5.1"""

SAMPLE_SDXL_MULTILINE = """\
score_9, score_8_up,
1boy, armor, (glowing sword:1.3)
BREAK
castle background
Negative prompt: lowres, bad anatomy
text, watermark
Steps: 25, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, Seed: 42, Size: 832x1216, \
Model hash: 67ab2fd8ec, Model: ponyDiffusionV6XL, Denoising strength: 0.3, \
Hires prompt: "score_9, detailed face", Hires resize: 1248x1824, Hires steps: 10, Hires upscaler: 4x-UltraSharp, \
ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3, ADetailer prompt: "detailed eyes, smile", \
Version: v1.7.0-375-gf92d6149"""

SAMPLE_INPAINT = """\
a red sports car, studio lighting
Steps: 20, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 7, Seed: 3, Size: 512x512, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Mask blur: 4, \
Inpaint area: Only masked, Masked area padding: 32, Version: v1.9.4"""

SAMPLE_OLD_HIRES = """\
landscape, mountains
Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 1024x768, Model hash: 81761151, \
Denoising strength: 0.7, First pass size: 0x0"""

SAMPLE_VARIATION_HYPERNET = """\
portrait of a knight
Steps: 40, Sampler: DDIM, CFG scale: 9, Seed: 77, Size: 512x640, Model hash: 925997e9, Variation seed: 1000, \
Variation seed strength: 0.25, Seed resize from: 512x512, Hypernet: anime, Hypernet strength: 0.8, RNG: CPU, \
Tiling: True, Version: 1.5.2"""

SAMPLE_FORGE = """\
a cozy cabin in the woods
Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 5, Size: 896x1152, \
Model hash: 275ef623d3, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1-previous-224-g900196889, \
Module 1: ae, Module 2: clip_l"""


# --------------------------------------------------------------------------------------------------------------
# quote / unquote / hashes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        (7, "7"),
        (7.0, "7.0"),
        (True, "True"),
        ("a, b", '"a, b"'),
        ("key: value", '"key: value"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("ünïcode, kept", '"ünïcode, kept"'),
        ('quote" only', 'quote" only'),
    ],
)
def test_quote_follows_a1111(value: str | int | float | bool, written: str) -> None:
    assert quote(value) == written
    assert unquote(written) == str(value)


def test_unquote_leaves_broken_json_alone() -> None:
    assert unquote('"bad \\x escape"') == '"bad \\x escape"'
    assert unquote('"') == '"'
    assert unquote("") == ""


def test_hashes_format_and_parse() -> None:
    assert format_hashes({"add_detail": "7c6bad76eb54", "my:lo,ra": "0123456789ab"}) == (
        "add_detail: 7c6bad76eb54, mylora: 0123456789ab"
    )
    assert parse_hashes(" a: 1 ,b:2, junk, c :3") == {"a": "1", "b": "2", "c": "3"}


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _params(**overrides: Any) -> InfotextParams:
    base = InfotextParams(
        prompt="a cat",
        steps=20,
        sampler="Euler a",
        schedule_type="Automatic",
        cfg_scale=7.0,
        seed=1234,
        width=512,
        height=512,
    )
    return dataclasses.replace(base, **overrides)


def test_format_minimal() -> None:
    assert format_infotext(_params()) == (
        "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 512x512"
    )


def test_format_reproduces_a1111_text_exactly() -> None:
    params = InfotextParams(
        prompt="masterpiece, best quality, 1girl, solo, (detailed eyes:1.2), <lora:add_detail:0.6>, looking at viewer",
        negative_prompt="easynegative, (worst quality, low quality:1.4), nsfw",
        steps=28,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7,
        seed=2380469321,
        width=512,
        height=768,
        model_hash="7f96a1a9ca",
        model="anything-v5-PrtRE",
        vae_hash="735e4c3a44",
        vae="vae-ft-mse-840000-ema-pruned.safetensors",
        denoising_strength=0.45,
        clip_skip=2,
        hires_upscale=2,
        hires_steps=14,
        hires_upscaler="R-ESRGAN 4x+ Anime6B",
        lora_hashes={"add_detail": "7c6bad76eb54"},
        ti_hashes={"easynegative": "c74b4e810b03"},
        version="v1.10.1",
    )
    assert format_infotext(params) == SAMPLE_V110_LORA_HIRES


def test_format_omits_what_a1111_omits() -> None:
    text = format_infotext(
        _params(
            negative_prompt="",
            clip_skip=1,
            rng="GPU",
            tiling=False,
            variation_seed=99,
            variation_seed_strength=0.0,
            token_merging_ratio=0.0,
            model_hash=None,
        )
    )
    assert "Negative prompt" not in text
    for label in ("Clip skip", "RNG", "Tiling", "Variation seed", "Token merging ratio", "Model hash"):
        assert label not in text


def test_format_writes_optional_fields_in_a1111_order() -> None:
    text = format_infotext(
        _params(
            negative_prompt="ugly",
            image_cfg_scale=1.5,
            face_restoration="CodeFormer",
            variation_seed=99,
            variation_seed_strength=0.3,
            seed_resize_from=(256, 256),
            conditional_mask_weight=1.0,
            clip_skip=2,
            ensd=31337,
            rng="CPU",
            tiling=True,
            hires_sampler="Euler",
            hires_prompt="sharp, detailed",
            hires_resize=(1024, 1024),
            extra={"Mask blur": 4, "Schedule type": "Karras", "NGMS": "NGMS"},
            version="v1.10.1",
            user="alice",
        )
    )
    assert text == (
        "a cat\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.0, Image CFG scale: 1.5, Seed: 1234, "
        "Face restoration: CodeFormer, Size: 512x512, Variation seed: 99, Variation seed strength: 0.3, "
        "Seed resize from: 256x256, Conditional mask weight: 1.0, Clip skip: 2, ENSD: 31337, RNG: CPU, "
        'Tiling: True, Hires sampler: Euler, Hires prompt: "sharp, detailed", Hires resize: 1024x1024, '
        "Mask blur: 4, NGMS, Version: v1.10.1, User: alice"
    )


def test_format_quotes_values_with_commas_colons_and_newlines() -> None:
    text = format_infotext(
        _params(
            model="models/v1: final, really",
            hires_negative_prompt="line one\nline two",
            extra={"ControlNet 0": 'Module: canny, Model: control_v11p [d14c016b], "Weight": 1'},
        )
    )
    last = text.split("\n")[-1]
    assert 'Model: "models/v1: final, really"' in last
    assert 'Hires negative prompt: "line one\\nline two"' in last
    assert 'ControlNet 0: "Module: canny, Model: control_v11p [d14c016b], \\"Weight\\": 1"' in last
    parsed = parse_infotext(text)
    assert parsed["Model"] == "models/v1: final, really"
    assert parsed["Hires negative prompt"] == "line one\nline two"
    assert parsed["ControlNet 0"] == 'Module: canny, Model: control_v11p [d14c016b], "Weight": 1'


def test_round_trip_multiline_prompts() -> None:
    params = _params(
        prompt="line one, (a:1.2)\nline two\n\nafter a blank line",
        negative_prompt="bad\nworse",
        lora_hashes={"detail": "7c6bad76eb54", "style": "0123456789ab"},
        hires_upscale=1.5,
        hires_steps=10,
        hires_upscaler="Latent",
        denoising_strength=0.55,
        extra={"Eta": "0.67", "Pad conds": "True"},
    )
    text = format_infotext(params)
    assert InfotextParams.from_infotext(text) == params
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == params.prompt
    assert parsed["Negative prompt"] == "bad\nworse"


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


def test_parse_v110_sample_with_lora_hires_and_ti_hashes() -> None:
    parsed = parse_infotext(SAMPLE_V110_LORA_HIRES)
    assert parsed == {
        "Steps": "28",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "7",
        "Seed": "2380469321",
        "Size-1": "512",
        "Size-2": "768",
        "Model hash": "7f96a1a9ca",
        "Model": "anything-v5-PrtRE",
        "VAE hash": "735e4c3a44",
        "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Denoising strength": "0.45",
        "Clip skip": "2",
        "Hires upscale": "2",
        "Hires steps": "14",
        "Hires upscaler": "R-ESRGAN 4x+ Anime6B",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "TI hashes": "easynegative: c74b4e810b03",
        "Version": "v1.10.1",
        "Prompt": (
            "masterpiece, best quality, 1girl, solo, (detailed eyes:1.2), <lora:add_detail:0.6>, looking at viewer"
        ),
        "Negative prompt": "easynegative, (worst quality, low quality:1.4), nsfw",
        "Hires resize-1": 0,
        "Hires resize-2": 0,
        "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": 32,
        "RNG": "GPU",
        "Schedule max sigma": 0,
        "Schedule min sigma": 0,
        "Schedule rho": 0,
        "VAE Encoder": "Full",
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
        "Emphasis": "Original",
        "Refiner switch by sampling steps": False,
    }
    assert list(parsed)[:3] == ["Steps", "Sampler", "Schedule type"]
    assert parse_hashes(str(parsed["Lora hashes"])) == {"add_detail": "7c6bad76eb54"}
    typed = InfotextParams.from_infotext(SAMPLE_V110_LORA_HIRES)
    assert (typed.width, typed.height, typed.clip_skip, typed.hires_upscale) == (512, 768, 2, 2.0)
    assert typed.ti_hashes == {"easynegative": "c74b4e810b03"}
    assert typed.extra == {}


def test_parse_2022_sample_gets_defaults() -> None:
    parsed = parse_infotext(SAMPLE_2022)
    assert parsed["Prompt"] == "a photograph of an astronaut riding a horse"
    assert parsed["Negative prompt"] == ""
    assert parsed["Clip skip"] == "1"
    assert parsed["Schedule type"] == "Automatic"
    assert parsed["Model hash"] == "45dee52b"
    assert "Emphasis" not in parsed
    assert "Downcast alphas_cumprod" not in parsed  # no Version: no compatibility flags
    assert infotext_sampler_and_scheduler(parsed) == ("Euler a", "Automatic")


def test_parse_pre_19_combined_sampler_and_backcompat_flags() -> None:
    parsed = parse_infotext(SAMPLE_PRE_19_COMBINED_SAMPLER)
    assert parsed["Sampler"] == "DPM++ 2M Karras"
    assert parsed["ENSD"] == "31337"
    assert parsed["Emphasis"] == "Original"
    assert parsed["Old prompt editing timelines"] is True
    assert parsed["Downcast alphas_cumprod"] is True
    assert "Pad conds v0" not in parsed
    assert infotext_sampler_and_scheduler(parsed) == ("DPM++ 2M", "Automatic")
    assert infotext_sampler_and_scheduler({"Sampler": "DPM++ 2M SDE Karras"}) == ("DPM++ 2M SDE", "Karras")


def test_parse_multiline_sdxl_sample_with_extension_keys() -> None:
    parsed = parse_infotext(SAMPLE_SDXL_MULTILINE)
    assert (
        parsed["Prompt"] == "score_9, score_8_up,\n1boy, armor, (glowing sword:1.3)\nBREAK\ncastle background"
    )
    assert parsed["Negative prompt"] == "lowres, bad anatomy\ntext, watermark"
    assert parsed["Hires prompt"] == "score_9, detailed face"
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("1248", "1824")
    assert parsed["ADetailer prompt"] == "detailed eyes, smile"
    assert parsed["ADetailer confidence"] == "0.3"
    assert "Downcast alphas_cumprod" not in parsed  # v1.7.0-375 is newer than v1.7.0-225
    typed = InfotextParams.from_infotext(SAMPLE_SDXL_MULTILINE)
    assert typed.hires_resize == (1248, 1824)
    assert typed.extra == {
        "ADetailer model": "face_yolov8n.pt",
        "ADetailer confidence": "0.3",
        "ADetailer prompt": "detailed eyes, smile",
    }


def test_parse_inpaint_sample() -> None:
    parsed = parse_infotext(SAMPLE_INPAINT)
    assert parsed["Inpaint area"] == "Only masked"
    assert parsed["Masked area padding"] == "32"
    assert parsed["Mask mode"] == "Inpaint masked"
    assert parsed["Mask blur"] == "4"
    assert "Downcast alphas_cumprod" not in parsed


def test_parse_old_hires_first_pass_size() -> None:
    parsed = parse_infotext(SAMPLE_OLD_HIRES)
    assert (parsed["Size-1"], parsed["Size-2"]) == (640, 448)
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (1024, 768)
    explicit = parse_infotext(SAMPLE_OLD_HIRES.replace("First pass size: 0x0", "First pass size: 512x384"))
    assert (explicit["Size-1"], explicit["Size-2"]) == (512, 384)


def test_parse_variation_hypernet_and_flags() -> None:
    parsed = parse_infotext(SAMPLE_VARIATION_HYPERNET)
    assert parsed["Prompt"] == "portrait of a knight<hypernet:anime:0.8>"
    assert (parsed["Seed resize from-1"], parsed["Seed resize from-2"]) == ("512", "512")
    assert parsed["Pad conds v0"] is True  # DDIM before 1.6.0
    assert "Old prompt editing timelines" not in parsed  # no '[' in the prompt
    typed = InfotextParams.from_infotext(SAMPLE_VARIATION_HYPERNET)
    assert (typed.variation_seed, typed.variation_seed_strength) == (1000, 0.25)
    assert typed.seed_resize_from == (512, 512)
    assert (typed.rng, typed.tiling) == ("CPU", True)
    assert typed.prompt == "portrait of a knight"
    assert typed.extra == {"Hypernet": "anime", "Hypernet strength": "0.8"}


def test_parse_forge_sample_with_unreadable_version() -> None:
    parsed = parse_infotext(SAMPLE_FORGE)
    assert parsed["Distilled CFG Scale"] == "3.5"
    assert parsed["Module 1"] == "ae"
    assert "Downcast alphas_cumprod" not in parsed  # A1111 cannot read Forge's version string


def test_last_line_needs_three_pairs() -> None:
    parsed = parse_infotext("a cat\nSteps: 20, Seed: 5")
    assert parsed["Prompt"] == "a cat\nSteps: 20, Seed: 5"
    assert "Steps" not in parsed
    only_prompt = parse_infotext("  just a prompt\nwith two lines  \n")
    assert only_prompt["Prompt"] == "just a prompt\nwith two lines"


def test_parse_quirks_follow_a1111() -> None:
    # empty values are skipped, flags (a key without a value) are not parsed, a repeated
    # "Negative prompt:" prefix is removed again, and leading empty lines collapse
    parsed = parse_infotext(
        "\n\na\nNegative prompt:\n\nb\nNegative prompt: c\nSteps: 1, Sampler: Euler, Model: , Seed: 2, NGMS"
    )
    assert parsed["Prompt"] == "a"
    assert parsed["Negative prompt"] == "b\nc"
    assert "Model" not in parsed
    assert "NGMS" not in parsed
    assert (
        parse_infotext("x\nSteps: 1, Sampler: Euler, Seed: 2", skip_fields=["Seed", "RNG"]).get("Seed")
        is None
    )


def test_from_infotext_errors() -> None:
    with pytest.raises(InfotextError, match="Steps"):
        InfotextParams.from_infotext("a\nSampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512")
    with pytest.raises(InfotextError, match="Size"):
        InfotextParams.from_infotext("a\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: big")
    with pytest.raises(InfotextError, match="Seed"):
        InfotextParams.from_infotext("a\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: x, Size: 8x8")


def test_parsed_values_are_json_serialisable() -> None:
    json.dumps(parse_infotext(SAMPLE_SDXL_MULTILINE))


# --------------------------------------------------------------------------------------------------------------
# Round-trip property
# --------------------------------------------------------------------------------------------------------------

_CHARS = list("abcXYZ0189 ,:;()[]<>\\/'é漢-_.=|#+")
_LINE_CHARS = st.sampled_from(_CHARS)
_VALUE_CHARS = st.sampled_from([*_CHARS, "\n", "\t"])


# A1111's text format cannot carry every string: values and prompt lines lose surrounding whitespace, "WxH"
# values are split into two keys, a value starting with '"' is read as JSON, a value equal to its key is a bare
# flag, and a line starting with "Negative prompt:" starts the negative prompt. The strategies avoid those.
_VALUE = (
    st.text(_VALUE_CHARS, min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda v: bool(v) and not re.fullmatch(r"\d+x\d+", v))
)
_LINE = (
    st.text(_LINE_CHARS, max_size=40).map(str.strip).filter(lambda v: not v.startswith("Negative prompt:"))
)
_PROMPT = st.lists(_LINE, min_size=1, max_size=3).map(lambda lines: "\n".join(lines).lstrip())
_FLOAT = st.floats(min_value=0.01, max_value=100, allow_nan=False, allow_infinity=False)
_NAME = (
    st.text(st.sampled_from("abcdefghij_-0123456789 "), min_size=1, max_size=12).map(str.strip).filter(bool)
)
_HASHES = st.dictionaries(_NAME, st.text("0123456789abcdef", min_size=10, max_size=12))


def _value_other_than(key: str) -> st.SearchStrategy[str]:
    return _VALUE.map(lambda value: value + "!" if value == key else value)


@st.composite
def _infotext_params(draw: st.DrawFn) -> InfotextParams:
    prompt = draw(_PROMPT)
    negative = draw(_PROMPT | st.just(""))
    strength = draw(st.none() | _FLOAT)
    extra_keys = draw(
        st.lists(st.sampled_from(["Mask blur", "Eta", "ControlNet 0", "ADetailer model"]), unique=True)
    )
    return InfotextParams(
        prompt=prompt,
        negative_prompt=negative if negative and negative[0] != "\n" else "",
        steps=draw(st.integers(1, 150)),
        sampler=draw(_value_other_than("Sampler")),
        schedule_type=draw(st.none() | st.sampled_from(["Automatic", "Karras", "SGM Uniform"])),
        cfg_scale=draw(_FLOAT | st.integers(1, 30)),
        seed=draw(st.integers(0, 2**32)),
        width=draw(st.integers(64, 2048)),
        height=draw(st.integers(64, 2048)),
        model_hash=draw(st.none() | st.text("0123456789abcdef", min_size=10, max_size=10)),
        model=draw(st.none() | _value_other_than("Model")),
        variation_seed=draw(st.integers(0, 10**9)) if strength else None,
        variation_seed_strength=strength,
        seed_resize_from=draw(st.none() | st.tuples(st.integers(1, 2048), st.integers(1, 2048))),
        denoising_strength=draw(st.none() | _FLOAT),
        clip_skip=draw(st.integers(1, 12)),
        rng=draw(st.sampled_from(["GPU", "CPU", "NV"])),
        tiling=draw(st.booleans()),
        hires_prompt=draw(st.none() | _VALUE),
        hires_resize=draw(st.none() | st.tuples(st.integers(0, 4096), st.integers(0, 4096))),
        hires_steps=draw(st.none() | st.integers(1, 50)),
        extra={key: draw(_value_other_than(key)) for key in extra_keys},
        lora_hashes=draw(_HASHES),
        ti_hashes=draw(_HASHES),
        version=draw(st.none() | st.just("v1.10.1")),
    )


@settings(max_examples=150, deadline=None)
@given(params=_infotext_params())
def test_format_then_read_back_is_identity(params: InfotextParams) -> None:
    text = format_infotext(params)
    assert InfotextParams.from_infotext(text) == params
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == params.prompt
    assert parsed["Negative prompt"] == params.negative_prompt
    assert parsed["Steps"] == str(params.steps)
    assert parsed["Size-1"] == str(params.width)
    for key, value in params.extra.items():
        assert parsed[key] == value
