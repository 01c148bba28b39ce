"""T2I-Adapters through the same ControlNet units, in the engine's own sampling loop: an adapter unit steers
the picture and reproduces per seed, its features are computed once per pass (adapter forwards counted) and
added only inside the unit's window, the three control modes scale them as the A1111 extension does, an
adapter of another family is refused naming the unit's field; and adapter files as people download them
(TencentARC's original layout, diffusers' layout; full, SDXL and light kinds at real size on torch's meta
device) are told apart and rebuilt from their shapes alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from sdfleet.domain import ControlNetUnit, JobKind
from sdfleet.engine.controlnet.adapter import load_adapter
from sdfleet.engine.controlnet.adapter_detect import adapter_ldm_name, detect_adapter, is_adapter
from sdfleet.engine.controlnet.adapter_pass import ADAPTER_SOFT, AdapterPass
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.engine.sd.residuals import StepInput
from sdfleet.errors import ValidationError
from sdfleet.testing.tiny_models import TinyModels, write_tiny_adapter
from tests.engine.conftest import spec

diffusers: Any = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def control_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    image = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(image).rectangle((6, 6, 26, 26), outline="white", width=2)
    path = tmp_path_factory.mktemp("adapter") / "square.png"
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def ad_engine(tiny: TinyModels) -> DiffusersEngine:
    return DiffusersEngine(
        tiny.sd1_file,
        models={"xl": tiny.sdxl_file},
        controlnets={"t2i-sd1": tiny.adapter_sd1_file, "t2i-xl": tiny.adapter_sdxl_file},
        device="cpu",
    )


def _unit(image: str, **changes: Any) -> dict[str, Any]:
    return {"model": "t2i-sd1", "image": image, **changes}


def _run(engine: DiffusersEngine, **changes: Any) -> bytes:
    result = engine.generate(JobKind.TXT2IMG, spec(**changes), lambda _s: None, lambda: False)
    return b"".join(i.image.tobytes() for i in result.images)


def _forwards(engine: DiffusersEngine, path: Path) -> list[int]:
    adapter = engine.controlnets.pool.get(path, "cpu", lambda p, d: load_adapter(p, device=d))
    calls: list[int] = []
    adapter.module.register_forward_hook(lambda _m, args, _out: calls.append(int(args[0].shape[0])))
    return calls


def test_an_adapter_unit_steers_reproduces_and_runs_once_per_pass(
    ad_engine: DiffusersEngine, tiny: TinyModels, control_image: str
) -> None:
    calls = _forwards(ad_engine, tiny.adapter_sd1_file)
    plain = _run(ad_engine, steps=4, batch_size=2)
    steered = _run(ad_engine, steps=4, batch_size=2, controlnet=[_unit(control_image)])
    assert calls == [2]  # one forward for the pass, one row per picture: no forward per step
    assert steered != plain
    assert _run(ad_engine, steps=4, batch_size=2, controlnet=[_unit(control_image)]) == steered
    other = _run(ad_engine, steps=4, batch_size=2, seed=99, controlnet=[_unit(control_image)])
    assert other != steered
    blank = Path(control_image).with_name("black.png")
    Image.new("RGB", (32, 32), "black").save(blank)
    assert _run(ad_engine, steps=4, batch_size=2, controlnet=[_unit(str(blank))]) != steered
    # the SDXL adapter on the SDXL checkpoint
    xl_plain = _run(ad_engine, model="xl", steps=3)
    assert _run(ad_engine, model="xl", steps=3, controlnet=[_unit(control_image, model="t2i-xl")]) != xl_plain


def test_the_window_is_respected(ad_engine: DiffusersEngine, control_image: str) -> None:
    plain = _run(ad_engine, steps=6, sampler_name="Euler")
    whole = _run(ad_engine, steps=6, sampler_name="Euler", controlnet=[_unit(control_image)])
    early = _run(
        ad_engine, steps=6, sampler_name="Euler", controlnet=[_unit(control_image, guidance_end=0.5)]
    )
    never = _run(
        ad_engine, steps=6, sampler_name="Euler", controlnet=[_unit(control_image, guidance_start=0.95)]
    )
    assert never == plain  # no step inside the window: nothing added
    assert early not in (plain, whole)


def _prepared(tiny: TinyModels, control_image: str, **changes: Any) -> AdapterPass:
    adapter = load_adapter(tiny.adapter_sd1_file)
    unit = ControlNetUnit(**_unit(control_image, **changes))
    picture = Image.open(control_image)
    return AdapterPass.prepare(
        [(0, unit, adapter, [picture])], (32, 32), device=torch.device("cpu"), dtype=torch.float32
    )


def _at(step: int, steps: int = 10) -> StepInput:
    sample = torch.zeros(2, 4, 16, 16)  # uncond row, cond row
    return StepInput(step, steps, sample, torch.tensor(500), torch.zeros(2, 77, 32), None, 2, True)


def test_the_modes_and_the_window_scale_the_features(tiny: TinyModels, control_image: str) -> None:
    base = _prepared(tiny, control_image)
    features = base.units[0].features
    assert [tuple(f.shape) for f in features] == [(1, 32, 8, 8), (1, 64, 8, 8)]
    found = _prepared(tiny, control_image, weight=0.5).step_residuals(_at(0))
    assert found is not None and found.intrablock is not None and found.down is None
    for got, feature in zip(found.intrablock, features, strict=True):
        assert torch.allclose(got, torch.cat([feature, feature]) * 0.5)  # both rows, × weight
    soft = _prepared(tiny, control_image, weight=0.5, control_mode="My prompt is more important")
    got_soft = soft.step_residuals(_at(0))
    assert got_soft is not None and got_soft.intrablock is not None
    for got, feature, scale in zip(got_soft.intrablock, features, ADAPTER_SOFT, strict=False):
        assert torch.allclose(got, torch.cat([feature, feature]) * 0.5 * scale)
    cond = _prepared(tiny, control_image, weight=0.5, control_mode="ControlNet is more important")
    got_cond = cond.step_residuals(_at(0))
    assert got_cond is not None and got_cond.intrablock is not None
    for got, feature, scale in zip(got_cond.intrablock, features, ADAPTER_SOFT, strict=False):
        assert torch.count_nonzero(got[:1]) == 0  # the unconditional row gets nothing
        assert torch.allclose(got[1:], feature * 0.5 * scale)
    window = _prepared(tiny, control_image, guidance_start=0.3, guidance_end=0.6)
    active = [window.step_residuals(_at(i)) is not None for i in range(10)]
    assert active == [i in (3, 4, 5, 6) for i in range(10)]


def test_an_adapter_of_another_family_is_refused_naming_the_unit(
    ad_engine: DiffusersEngine, control_image: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _run(ad_engine, model="xl", steps=2, controlnet=[_unit(control_image)])
    assert refused.value.field == "controlnet.0.model"
    assert "T2I-Adapter 't2i-sd1' is made for SD1" in refused.value.message


REAL = {
    "sd15": ({}, "sd1", "full_adapter"),  # t2iadapter_canny_sd15v2 and the sd14v1 family
    "sd15-sketch": ({"in_channels": 1}, "sd1", "full_adapter"),
    "sdxl": ({"adapter_type": "full_adapter_xl", "downscale_factor": 16}, "sdxl", "full_adapter_xl"),
    "color": (
        {"adapter_type": "light_adapter", "channels": [320, 640, 1280], "num_res_blocks": 4},
        "sd1",
        "light_adapter",
    ),
}


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
@pytest.mark.parametrize("name", list(REAL))
def test_real_size_adapters_are_rebuilt_from_their_shapes(name: str, layout: str) -> None:
    config, arch, kind = REAL[name]
    with torch.device("meta"):
        state = dict(diffusers.T2IAdapter(**config).state_dict())
    blocks = int(config.get("num_res_blocks", 2))
    if layout == "ldm":
        file = {adapter_ldm_name(k, kind, blocks): tuple(v.shape) for k, v in state.items()}
    else:
        file = {k: tuple(v.shape) for k, v in state.items()}
    assert is_adapter(file)
    info = detect_adapter(file)  # no metadata: shapes only
    assert (info.arch, info.kind, info.layout) == (arch, kind, layout)
    with torch.device("meta"):
        rebuilt = dict(diffusers.T2IAdapter(**info.config).state_dict())
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_the_original_layout_loads_the_same_weights(tiny: TinyModels, tmp_path: Path) -> None:
    ldm = write_tiny_adapter(tmp_path / "ldm.safetensors", "sd1", layout="ldm", seed=40)
    a, b = load_adapter(tiny.adapter_sd1_file), load_adapter(ldm)
    assert b.info.layout == "ldm" and a.info.layout == "diffusers"
    pixels = torch.rand(1, 3, 32, 32)
    assert all(torch.equal(x, y) for x, y in zip(a.module(pixels), b.module(pixels), strict=True))


def test_controlnets_and_checkpoints_are_not_adapters(tiny: TinyModels) -> None:
    from sdfleet.engine.sd.checkpoints import read_header

    for path in (tiny.controlnet_sd1_file, tiny.controlnet_sdxl_file, tiny.sd1_file):
        assert not is_adapter(read_header(path).shapes)
    with pytest.raises(ValidationError):
        load_adapter(tiny.controlnet_sdxl_file)


def test_adapters_mix_with_controlnets_and_take_the_hires_pass(
    tiny: TinyModels, control_image: str, tmp_path: Path
) -> None:
    engine = DiffusersEngine(
        tiny.sd1_file,
        controlnets={"t2i-sd1": tiny.adapter_sd1_file, "canny-sd1": tiny.controlnet_sd1_file},
        device="cpu",
    )
    adapter, net = _unit(control_image), _unit(control_image, model="canny-sd1", weight=1.5)
    alone = _run(engine, steps=3, controlnet=[adapter])
    both = _run(engine, steps=3, controlnet=[adapter, net])
    assert both not in (alone, _run(engine, steps=3, controlnet=[net]))
    calls = _forwards(engine, tiny.adapter_sd1_file)
    hires = {
        "steps": 3,
        "enable_hr": True,
        "hr_scale": 2,
        "hr_second_pass_steps": 2,
        "hr_denoising_strength": 0.6,
    }
    first_only = _run(engine, **hires, controlnet=[{**adapter, "hr_option": "Low res only"}])
    assert calls == [1]  # the first pass only
    both_passes = _run(engine, **hires, controlnet=[adapter])
    assert calls == [1, 1, 1]  # once per pass, at each pass's size
    assert both_passes != first_only
