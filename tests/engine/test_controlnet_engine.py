"""ControlNet units in the engine's own sampling loop, on the tiny SD 1.x and SDXL nets: a unit steers the
image and reproduces per seed; the net runs only inside its guidance window (forward calls counted); the
three control modes scale as the A1111 extension does, "ControlNet is more important" on the conditional
rows only; two units add up; hr_option picks the passes; a net of another family is refused naming the
unit's field; a ControlNet Union runs with the unit's control type, which changes the picture, and several
units share one Union net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw
from pydantic import ValidationError as PydanticError

from sdfleet.domain import ControlNetUnit, JobKind
from sdfleet.engine.controlnet.apply import ControlPass, fit_control, soft_scales
from sdfleet.engine.controlnet.loader import load_controlnet
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.errors import ValidationError
from sdfleet.testing.tiny_models import TinyModels
from tests.engine.conftest import spec


@pytest.fixture(scope="module")
def control_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    image = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), outline="white", width=2)  # an edge map of a circle
    path = tmp_path_factory.mktemp("control") / "circle.png"
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def cn_engine(tiny: TinyModels) -> DiffusersEngine:
    return DiffusersEngine(
        tiny.sd1_file,
        models={"xl": tiny.sdxl_file},
        controlnets={
            "canny-sd1": tiny.controlnet_sd1_file,
            "canny-xl": tiny.controlnet_sdxl_file,
            "union-xl": tiny.controlnet_union_file,
        },
        device="cpu",
    )


def _unit(image: str, **changes: Any) -> dict[str, Any]:
    return {"model": "canny-sd1", "image": image, **changes}


def _pixels(result: Any) -> bytes:
    return b"".join(i.image.tobytes() for i in result.images)


def _calls(engine: DiffusersEngine, path: Path) -> list[int]:
    """A list that grows by the batch size of every forward pass of the net at ``path``."""
    net = engine.controlnets.pool.get(path, "cpu", lambda p, d: load_controlnet(p, device=d))
    rows: list[int] = []
    net.module.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    return rows


def test_a_unit_steers_the_picture_and_reproduces(cn_engine: DiffusersEngine, control_image: str) -> None:
    plain = cn_engine.generate(JobKind.TXT2IMG, spec(steps=4), lambda _s: None, lambda: False)
    steered = spec(steps=4, controlnet=[_unit(control_image, weight=2.0)])
    first = cn_engine.generate(JobKind.TXT2IMG, steered, lambda _s: None, lambda: False)
    again = cn_engine.generate(JobKind.TXT2IMG, steered, lambda _s: None, lambda: False)
    assert _pixels(first) != _pixels(plain) and _pixels(first) == _pixels(again)
    # the control image itself steers, not just the net being there
    blank = Image.new("RGB", (32, 32), "black")
    path = Path(control_image).with_name("blank.png")
    blank.save(path)
    other = spec(steps=4, controlnet=[_unit(str(path), weight=2.0)])
    assert _pixels(cn_engine.generate(JobKind.TXT2IMG, other, lambda _s: None, lambda: False)) != _pixels(
        first
    )
    info = first.images[0].infotext
    assert 'ControlNet 0: "Module: none, Model: canny-sd1 [' in info
    assert "Weight: 2, Resize Mode: Crop and Resize" in info and "Control Mode: Balanced" in info
    # the net is part of the warm set the worker reports, so claims prefer this worker for its jobs
    assert "controlnet:canny-sd1" in cn_engine.loaded_models()
    # a disabled unit changes nothing
    off = spec(steps=4, controlnet=[_unit(control_image, enabled=False)])
    assert _pixels(cn_engine.generate(JobKind.TXT2IMG, off, lambda _s: None, lambda: False)) == _pixels(plain)


def test_the_net_runs_only_inside_its_window_and_mode_2_on_the_conditional_rows(
    cn_engine: DiffusersEngine, tiny: TinyModels, control_image: str
) -> None:
    rows = _calls(cn_engine, tiny.controlnet_sd1_file)
    window = {"guidance_start": 0.2, "guidance_end": 0.6}
    job = spec(steps=10, sampler_name="Euler", batch_size=2, controlnet=[_unit(control_image, **window)])
    cn_engine.generate(JobKind.TXT2IMG, job, lambda _s: None, lambda: False)
    assert rows == [4] * 5  # steps 2…6 of 10; uncond + cond rows of a batch of 2
    rows.clear()
    more = _unit(control_image, control_mode="ControlNet is more important", **window)
    cn_engine.generate(
        JobKind.TXT2IMG,
        job.model_copy(update={"controlnet": [ControlNetUnit(**more)]}),
        lambda _s: None,
        lambda: False,
    )
    assert rows == [2] * 5  # the conditional rows only: half the rows
    rows.clear()
    # hires fix: a "Low res only" unit steers the first pass alone
    hires = spec(
        steps=4,
        sampler_name="Euler",
        enable_hr=True,
        hr_scale=2,
        hr_second_pass_steps=3,
        hr_denoising_strength=0.5,
        controlnet=[_unit(control_image, hr_option="Low res only")],
    )
    cn_engine.generate(JobKind.TXT2IMG, hires, lambda _s: None, lambda: False)
    assert len(rows) == 4
    rows.clear()
    both = hires.model_copy(update={"controlnet": [ControlNetUnit(**_unit(control_image))]})
    cn_engine.generate(JobKind.TXT2IMG, both, lambda _s: None, lambda: False)
    assert len(rows) > 4  # and the hires pass's steps too


def _pass(tiny: TinyModels, control_image: str, *units: dict[str, Any]) -> ControlPass:
    net = load_controlnet(tiny.controlnet_sd1_file)
    picture = Image.open(control_image)
    prepared = [(i, ControlNetUnit(**u), net, [picture]) for i, u in enumerate(units)]
    return ControlPass.prepare(prepared, (32, 32), device=torch.device("cpu"), dtype=torch.float32)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=gen)  # uncond row, cond row
    embeds = torch.randn(2, 77, 32, generator=gen)
    return sample, torch.tensor(500), embeds


def test_the_three_modes_scale_as_the_extension_does(tiny: TinyModels, control_image: str) -> None:
    sample, t, embeds = _inputs()

    def residuals(mode: str, weight: float = 0.8) -> list[torch.Tensor]:
        found = _pass(tiny, control_image, _unit(control_image, control_mode=mode, weight=weight)).residuals(
            0, 10, sample, t, embeds, None, groups=2, guided=True
        )
        assert found is not None
        return [*found[0], found[1]]

    balanced = residuals("Balanced")
    plain = residuals("Balanced", weight=1.0)
    assert all(torch.allclose(b, p * 0.8, atol=1e-6) for b, p in zip(balanced, plain, strict=True))
    soft = residuals("My prompt is more important")
    scales = soft_scales(0.8, len(plain))
    assert scales[-1] == pytest.approx(0.8) and scales[0] == pytest.approx(0.8 * 0.825 ** (len(plain) - 1))
    assert all(torch.allclose(s, p * w, atol=1e-6) for s, p, w in zip(soft, plain, scales, strict=True))
    control = residuals("ControlNet is more important")
    for c, s in zip(control, soft, strict=True):
        assert torch.count_nonzero(c[:1]) == 0  # the unconditional row gets nothing
        assert torch.allclose(c[1:], s[1:], atol=1e-5)  # the conditional row: soft injection
    assert soft_scales(1.0, 13)[0] == pytest.approx(0.825**12)  # SD 1.x's 13 residuals: 0.825^(12−i)


def test_two_units_add_their_residuals(tiny: TinyModels, control_image: str) -> None:
    sample, t, embeds = _inputs()
    a, b = _unit(control_image, weight=0.5), _unit(control_image, weight=1.5, resize_mode="Just Resize")
    both = _pass(tiny, control_image, a, b).residuals(0, 4, sample, t, embeds, None, groups=2, guided=True)
    one = _pass(tiny, control_image, a).residuals(0, 4, sample, t, embeds, None, groups=2, guided=True)
    two = _pass(tiny, control_image, b).residuals(0, 4, sample, t, embeds, None, groups=2, guided=True)
    assert both is not None and one is not None and two is not None
    assert torch.allclose(both[1], one[1] + two[1], atol=1e-5)
    assert all(torch.allclose(x, y + z, atol=1e-5) for x, y, z in zip(both[0], one[0], two[0], strict=True))
    # outside every window: no residuals at all
    late = _pass(tiny, control_image, _unit(control_image, guidance_start=0.9))
    assert late.residuals(0, 4, sample, t, embeds, None, groups=2, guided=True) is None


def test_sdxl_units_run_and_other_families_are_refused(
    cn_engine: DiffusersEngine, control_image: str
) -> None:
    xl = spec(model="xl", steps=2, controlnet=[_unit(control_image, model="canny-xl")])
    assert len(cn_engine.generate(JobKind.TXT2IMG, xl, lambda _s: None, lambda: False).images) == 1
    wrong = spec(
        model="xl", steps=2, controlnet=[_unit(control_image), _unit(control_image, model="canny-xl")]
    )
    with pytest.raises(ValidationError) as refused:
        cn_engine.generate(JobKind.TXT2IMG, wrong, lambda _s: None, lambda: False)
    assert refused.value.field == "controlnet.0.model" and "made for SD1" in refused.value.message


def test_img2img_reads_the_init_image_when_a_unit_has_none(
    cn_engine: DiffusersEngine, control_image: str
) -> None:
    job = spec(init_images=[control_image], denoising_strength=0.8, steps=4)
    plain = cn_engine.generate(JobKind.IMG2IMG, job, lambda _s: None, lambda: False)
    steered = job.model_copy(update={"controlnet": [ControlNetUnit(model="canny-sd1", weight=2.0)]})
    assert _pixels(cn_engine.generate(JobKind.IMG2IMG, steered, lambda _s: None, lambda: False)) != _pixels(
        plain
    )


def test_a_canny_unit_preprocesses_its_picture_inline(cn_engine: DiffusersEngine, tmp_path: Path) -> None:
    photo = Image.new("RGB", (48, 40), (90, 140, 200))
    ImageDraw.Draw(photo).rectangle((10, 8, 36, 30), fill=(230, 200, 40))  # a picture, not an edge map
    path = tmp_path / "photo.png"
    photo.save(path)
    as_is = spec(steps=3, controlnet=[_unit(str(path), weight=2.0)])
    canny = spec(steps=3, controlnet=[_unit(str(path), weight=2.0, module="canny", processor_res=64)])
    first = cn_engine.generate(JobKind.TXT2IMG, as_is, lambda _s: None, lambda: False)
    edges = cn_engine.generate(JobKind.TXT2IMG, canny, lambda _s: None, lambda: False)
    assert _pixels(first) != _pixels(edges)
    assert 'ControlNet 0: "Module: canny, Model: canny-sd1' in edges.images[0].infotext
    assert "Processor Res: 64" in edges.images[0].infotext


def test_resize_modes_fit_the_control_image() -> None:
    wide = Image.new("RGB", (40, 20), (200, 0, 0))
    wide.paste((0, 0, 200), (0, 0, 10, 20))  # a blue band on the left
    assert fit_control(wide, 20, 20, "Just Resize").size == (20, 20)
    crop = fit_control(wide, 20, 20, "Crop and Resize")
    assert crop.getpixel((0, 10)) == (200, 0, 0)  # the middle kept: the band is cut away
    fill = fit_control(wide, 20, 20, "Resize and Fill")
    assert fill.getpixel((10, 0)) == (200, 0, 0)  # padded with the border's median colour
    assert fill.getpixel((1, 10))[2] > 150  # the whole picture inside, band and all


def test_a_union_net_steers_by_its_control_type(
    cn_engine: DiffusersEngine, tiny: TinyModels, control_image: str
) -> None:
    def run(*units: dict[str, Any]) -> Any:
        job = spec(model="xl", steps=3, controlnet=list(units))
        return cn_engine.generate(JobKind.TXT2IMG, job, lambda _s: None, lambda: False)

    plain = run()
    edges = run(_unit(control_image, model="union-xl", union_control_type="Hard Edge", weight=2.0))
    again = run(_unit(control_image, model="union-xl", union_control_type="canny", weight=2.0))  # a tag
    depth = run(_unit(control_image, model="union-xl", union_control_type="Depth", weight=2.0))
    assert _pixels(edges) != _pixels(plain) and _pixels(edges) == _pixels(again)
    assert _pixels(depth) != _pixels(edges)  # the type, not only the image, steers
    # two units on the one Union net, each with its own type: both count, one net runs both
    rows = _calls(cn_engine, tiny.controlnet_union_file)
    both = run(
        _unit(control_image, model="union-xl", union_control_type="Hard Edge", weight=2.0),
        _unit(control_image, model="union-xl", union_control_type="Depth", weight=1.0),
    )
    assert _pixels(both) not in (_pixels(edges), _pixels(depth))
    assert rows == [2] * 6  # 3 steps × 2 units on the same module (uncond + cond rows each)


@pytest.mark.parametrize(
    ("changes", "says"),
    [({}, "union_control_type (one of OpenPose"), ({"union_control_type": "Tile"}, "knows 6 control types")],
)
def test_a_union_unit_needs_a_type_the_net_knows(
    cn_engine: DiffusersEngine, control_image: str, changes: dict[str, Any], says: str
) -> None:
    job = spec(model="xl", steps=2, controlnet=[_unit(control_image, model="union-xl", **changes)])
    with pytest.raises(ValidationError) as refused:
        cn_engine.generate(JobKind.TXT2IMG, job, lambda _s: None, lambda: False)
    assert refused.value.field == "controlnet.0.union_control_type" and says in refused.value.message


def test_an_unknown_union_type_is_refused_at_the_edge() -> None:
    with pytest.raises(PydanticError) as refused:
        ControlNetUnit(model="union-xl", union_control_type="sparkles")
    assert refused.value.errors()[0]["loc"] == ("union_control_type",)
    assert ControlNetUnit(model="u", union_control_type="Unknown").union_control_type is None
    assert ControlNetUnit(model="u", union_control_type="normal map").union_control_type == "Normal Map"
