"""IP-Adapter units (image prompts) in the engine's own sampling loop, on the tiny SD 1.x and SDXL models with
the tiny CLIP vision encoder: the image prompt changes the picture against the same seed without it, another
reference image gives another picture, results reproduce per seed; the unit's scale is its weight inside its
guidance window and 0 outside (where the picture is exactly the one without it); two units together; the
UNet gets its own processors back after every job (also an interrupted one); an adapter of another family,
or an encoder that does not fit, is refused naming the unit's field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from sdfleet.domain import JobKind
from sdfleet.engine.base import GenerationResult
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.errors import Interrupted, ValidationError
from sdfleet.testing.tiny_models import TinyModels
from tests.engine.conftest import spec


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("references")
    red = Image.new("RGB", (48, 40), (200, 30, 30))
    ImageDraw.Draw(red).ellipse((8, 8, 36, 32), fill=(250, 220, 40))
    blue = Image.new("RGB", (40, 40), (20, 40, 220))
    ImageDraw.Draw(blue).rectangle((4, 20, 36, 36), fill=(10, 200, 90))
    out = {}
    for name, image in (("red", red), ("blue", blue)):
        image.save(folder / f"{name}.png")
        out[name] = str(folder / f"{name}.png")
    return out


@pytest.fixture(scope="module")
def ip_engine(tiny: TinyModels) -> DiffusersEngine:
    return DiffusersEngine(
        tiny.sd1_file,
        models={"xl": tiny.sdxl_file},
        controlnets={"canny-sd1": tiny.controlnet_sd1_file},
        ip_adapters={
            "ip-adapter_sd15": tiny.ip_adapter_sd1_file,
            "ip-adapter-plus_sd15": tiny.ip_adapter_plus_sd1_file,
            "ip-adapter_sdxl": tiny.ip_adapter_sdxl_file,
        },
        image_encoders={"tiny-clip": tiny.image_encoder_file},
        device="cpu",
    )


def _run(engine: DiffusersEngine, **overrides: Any) -> GenerationResult:
    job = spec(**{"steps": 4, **overrides})
    return engine.generate(JobKind.TXT2IMG, job, lambda _s: None, lambda: False)


def _pixels(result: GenerationResult) -> bytes:
    return b"".join(i.image.tobytes() for i in result.images)


def _differ(a: GenerationResult, b: GenerationResult) -> float:
    """Mean absolute difference of two results' pixels (0…255)."""
    x, y = _pixels(a), _pixels(b)
    return sum(abs(p - q) for p, q in zip(x, y, strict=True)) / len(x)


@pytest.mark.parametrize("adapter", ["ip-adapter_sd15", "ip-adapter-plus_sd15"])
def test_the_image_prompt_steers_the_picture_and_reproduces(
    ip_engine: DiffusersEngine, references: dict[str, str], adapter: str
) -> None:
    plain = _run(ip_engine)
    unit = {"model": adapter, "module": "ip-adapter-auto", "image": references["red"]}
    steered = _run(ip_engine, controlnet=[unit])
    assert _differ(steered, plain) > 1.0  # measurably, not by a rounding
    assert _pixels(_run(ip_engine, controlnet=[unit])) == _pixels(steered)  # per seed
    other = _run(ip_engine, controlnet=[{**unit, "image": references["blue"]}])
    assert _differ(other, steered) > 0.5  # the reference image itself steers, not the adapter being there
    assert _pixels(_run(ip_engine, controlnet=[{**unit, "weight": 0.0}])) == _pixels(plain)
    info = steered.images[0].infotext
    assert f'ControlNet 0: "Module: ip-adapter-auto, Model: {adapter} [' in info
    # another seed, another picture with the same image prompt
    assert _pixels(_run(ip_engine, controlnet=[unit], seed=99)) != _pixels(steered)


def test_the_unit_acts_inside_its_window_only(ip_engine: DiffusersEngine, references: dict[str, str]) -> None:
    unit = {"model": "ip-adapter_sd15", "image": references["red"], "weight": 0.7}
    job = {"steps": 10, "sampler_name": "Euler", "batch_size": 2}
    _run(ip_engine, controlnet=[{**unit, "guidance_start": 0.2, "guidance_end": 0.6}], **job)
    assert [s[0] for s in ip_engine.ip_adapters.last_scales] == [
        0.0,
        0.0,
        0.7,
        0.7,
        0.7,
        0.7,
        0.7,
        0.0,
        0.0,
        0.0,
    ]  # steps 2…6 of 10
    # a window no step falls into: the IP attention never runs, and the picture is the one without the unit
    outside = _run(ip_engine, controlnet=[{**unit, "guidance_start": 0.95, "guidance_end": 1.0}], **job)
    assert _pixels(outside) == _pixels(_run(ip_engine, **job))
    # hires fix: a "Low res only" unit is off in the hires pass
    hires = {"enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 3, "hr_denoising_strength": 0.5}
    _run(ip_engine, controlnet=[{**unit, "hr_option": "Low res only"}], sampler_name="Euler", **hires)
    scales = [s[0] for s in ip_engine.ip_adapters.last_scales]
    assert scales[:4] == [0.7] * 4 and len(scales) > 4 and set(scales[4:]) == {0.0}


def test_two_units_and_a_controlnet_together(ip_engine: DiffusersEngine, references: dict[str, str]) -> None:
    red = {"model": "ip-adapter_sd15", "image": references["red"]}
    blue = {"model": "ip-adapter-plus_sd15", "image": references["blue"], "weight": 0.8}
    one, both = _run(ip_engine, controlnet=[red]), _run(ip_engine, controlnet=[red, blue])
    assert _pixels(both) != _pixels(one) and _pixels(_run(ip_engine, controlnet=[red, blue])) == _pixels(both)
    assert [len(s) for s in ip_engine.ip_adapters.last_scales] == [2] * 4
    with_net = _run(ip_engine, controlnet=[red, {"model": "canny-sd1", "image": references["blue"]}])
    assert _pixels(with_net) != _pixels(one)
    assert "ControlNet 0: " in with_net.images[0].infotext and "ControlNet 1: " in with_net.images[0].infotext
    warm = ip_engine.loaded_models()  # what the worker reports for cache-aware claims
    assert {"ip_adapter:ip-adapter_sd15", "ip_adapter:ip-adapter-plus_sd15", "controlnet:canny-sd1"} <= set(
        warm
    )
    assert any(name.startswith("image_encoder:") for name in warm)


def test_the_unet_gets_its_own_processors_back(
    ip_engine: DiffusersEngine, references: dict[str, str]
) -> None:
    plain = _run(ip_engine)
    unet = ip_engine.store.get(Path(str(ip_engine.default_model))).pipe.unet
    before = dict(unet.attn_processors)
    unit = {"model": "ip-adapter-plus_sd15", "image": references["red"]}
    _run(ip_engine, controlnet=[unit])
    after = dict(unet.attn_processors)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    assert _pixels(_run(ip_engine)) == _pixels(plain)  # the next job is unaffected
    # an interrupted job too
    with pytest.raises(Interrupted):
        ip_engine.generate(
            JobKind.TXT2IMG, spec(steps=4, controlnet=[unit]), lambda _s: None, iter([False, True]).__next__
        )
    assert all(unet.attn_processors[k] is before[k] for k in before) and unet.encoder_hid_proj is None
    assert _pixels(_run(ip_engine)) == _pixels(plain)


def test_sdxl(ip_engine: DiffusersEngine, references: dict[str, str]) -> None:
    xl = {"model": "xl", "width": 64, "height": 64, "steps": 3}
    unit = {
        "model": "ip-adapter_sdxl",
        "image": references["red"],
        "module": "ip-adapter_clip_sdxl_plus_vith",
    }
    with pytest.raises(ValidationError) as refused:  # the tiny encoder is no ViT-H
        _run(ip_engine, controlnet=[unit], **xl)
    assert refused.value.field == "controlnet.0.module"
    plain = _run(ip_engine, **xl)
    steered = _run(ip_engine, controlnet=[{**unit, "module": "ip-adapter-auto"}], **xl)
    assert _differ(steered, plain) > 0.5


def test_an_adapter_or_encoder_that_does_not_fit_is_refused_naming_the_field(
    ip_engine: DiffusersEngine, references: dict[str, str]
) -> None:
    with pytest.raises(ValidationError) as refused:
        _run(ip_engine, controlnet=[{"model": "ip-adapter_sdxl", "image": references["red"]}])
    assert refused.value.field == "controlnet.0.model" and "made for SDXL" in refused.value.message
    with pytest.raises(ValidationError) as refused:
        _run(
            ip_engine,
            controlnet=[{"model": "ip-adapter_sd15", "image": references["red"], "image_encoder": "x"}],
        )
    assert refused.value.field == "controlnet.0.image_encoder"
    with pytest.raises(ValidationError) as refused:
        _run(
            ip_engine,
            controlnet=[{"model": "ip-adapter_sd15", "image": references["red"], "module": "canny"}],
        )
    assert refused.value.field == "controlnet.0.module"
    with pytest.raises(ValidationError) as refused:
        _run(ip_engine, controlnet=[{"model": "ip-adapter_sd15"}])
    assert refused.value.field == "controlnet.0.image"


def test_img2img_reads_the_init_image_when_the_unit_has_none(
    ip_engine: DiffusersEngine, references: dict[str, str]
) -> None:
    def img2img(init: str, **unit: Any) -> GenerationResult:
        job = spec(steps=4, init_images=[init], denoising_strength=0.8, controlnet=[unit] if unit else [])
        return ip_engine.generate(JobKind.IMG2IMG, job, lambda _s: None, lambda: False)

    plain = img2img(references["red"])
    prompted = img2img(references["red"], model="ip-adapter_sd15")
    assert _differ(prompted, plain) > 0.5
    assert _pixels(prompted) == _pixels(
        img2img(references["red"], model="ip-adapter_sd15", image=references["red"])
    )
