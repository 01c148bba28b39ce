"""A unit's masks and detected maps in the engine, as the A1111 ControlNet extension applies them:
``effective_region_mask`` limits where a unit steers (its residuals × the mask resized to each residual),
the inpaint modules' mask makes the hint −1 where it is set, a drawn ``mask`` on another module is the
picture it reads (canvas scribble), and each unit with ``save_detected_map`` returns its control map after
the pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sdfleet.domain import ControlNetUnit, JobKind
from sdfleet.engine.controlnet.apply import ControlPass
from sdfleet.engine.controlnet.loader import load_controlnet
from sdfleet.engine.controlnet.preprocess import preprocess
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.testing.tiny_models import TinyModels
from tests.engine.conftest import spec


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("masks")
    photo = Image.new("RGB", (64, 64), (90, 140, 200))
    ImageDraw.Draw(photo).rectangle((12, 10, 50, 52), fill=(230, 200, 40))
    left = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(left).rectangle((0, 0, 31, 63), fill=255)
    scribble = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(scribble).line((5, 5, 58, 58), fill=255, width=4)
    paths = {}
    for name, image in (("photo", photo), ("left", left), ("scribble", scribble)):
        paths[name] = str(folder / f"{name}.png")
        image.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def cn_engine(tiny: TinyModels) -> DiffusersEngine:
    return DiffusersEngine(tiny.sd1_file, controlnets={"canny-sd1": tiny.controlnet_sd1_file}, device="cpu")


def _run(engine: DiffusersEngine, **changes: Any) -> Any:
    return engine.generate(
        JobKind.TXT2IMG, spec(width=64, height=64, steps=4, **changes), lambda _s: None, lambda: False
    )


def _unit(image: str, **changes: Any) -> dict[str, Any]:
    return {"model": "canny-sd1", "image": image, "weight": 2.0, **changes}


def test_each_unit_returns_its_detected_map_unless_told_not_to(
    cn_engine: DiffusersEngine, pictures: dict[str, str]
) -> None:
    canny = _unit(pictures["photo"], module="canny", processor_res=64)
    result = _run(cn_engine, n_iter=2, controlnet=[canny, _unit(pictures["photo"])])
    assert len(result.images) == 2 and len(result.detected_maps) == 2  # one a unit, not one a picture
    expected = preprocess("canny", Image.open(pictures["photo"]), resolution=64)
    assert np.array_equal(np.asarray(result.detected_maps[0]), np.asarray(expected))
    assert np.array_equal(np.asarray(result.detected_maps[1]), np.asarray(Image.open(pictures["photo"])))
    quiet = _run(cn_engine, controlnet=[{**canny, "save_detected_map": False}])
    assert quiet.detected_maps == []
    assert _run(cn_engine).detected_maps == []


def test_the_effective_region_mask_limits_where_a_unit_steers(
    cn_engine: DiffusersEngine, tiny: TinyModels, pictures: dict[str, str]
) -> None:
    # the residuals: zero where the mask is black, the unmasked residuals where it is white
    net = load_controlnet(tiny.controlnet_sd1_file)
    unit = ControlNetUnit(**_unit(pictures["photo"]))
    image = Image.open(pictures["photo"])
    whole = ControlPass.prepare(
        [(0, unit, net, [image])], (64, 64), device=torch.device("cpu"), dtype=torch.float32
    )
    limited = ControlPass.prepare(
        [(0, unit, net, [image])],
        (64, 64),
        device=torch.device("cpu"),
        dtype=torch.float32,
        regions={0: Image.open(pictures["left"])},
    )
    gen = torch.Generator().manual_seed(0)
    sample, embeds = torch.randn(2, 4, 32, 32, generator=gen), torch.randn(2, 77, 32, generator=gen)
    full = whole.residuals(0, 4, sample, torch.tensor(500), embeds, None, groups=2, guided=True)
    part = limited.residuals(0, 4, sample, torch.tensor(500), embeds, None, groups=2, guided=True)
    assert full is not None and part is not None
    for a, b in zip([*full[0], full[1]], [*part[0], part[1]], strict=True):
        width = a.shape[-1]
        if width >= 4:
            assert torch.count_nonzero(b[..., -(width // 4) :]) == 0  # the right quarter: nothing
            assert torch.allclose(b[..., : width // 4], a[..., : width // 4], atol=1e-6)  # the left: all
    # the picture: outside the mask it stays closer to the picture without the unit than inside it
    plain = np.asarray(_run(cn_engine).images[0].image, dtype=np.float64)
    steered = _run(cn_engine, controlnet=[_unit(pictures["photo"], effective_region_mask=pictures["left"])])
    changed = np.abs(np.asarray(steered.images[0].image, dtype=np.float64) - plain).mean(axis=(0, 2))
    inside, outside = changed[:28].mean(), changed[36:].mean()
    assert inside > 0 and outside < inside, (inside, outside)


def test_inpaint_masks_make_the_hint_minus_one_and_scribbles_become_the_picture(
    cn_engine: DiffusersEngine, tiny: TinyModels, pictures: dict[str, str]
) -> None:
    net = load_controlnet(tiny.controlnet_sd1_file)
    unit = ControlNetUnit(**_unit(pictures["photo"], module="inpaint", mask=pictures["left"]))
    made = ControlPass.for_pass(
        [(0, unit, net)],
        (64, 64),
        [None],
        hires=False,
        enable_hr=False,
        image=lambda ref, _field: Image.open(ref),
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    assert made is not None and made.maps[0].mode == "RGBA"
    assert made.maps[0].getpixel((0, 0))[3] == 128  # shown half transparent where masked
    inpaint = _run(cn_engine, controlnet=[_unit(pictures["photo"], module="inpaint", mask=pictures["left"])])
    as_is = _run(cn_engine, controlnet=[_unit(pictures["photo"])])
    assert inpaint.images[0].image.tobytes() != as_is.images[0].image.tobytes()  # the masked half is −1
    # a drawn mask on a canny unit: the module reads the scribble, not the photo
    drawn = _run(
        cn_engine,
        controlnet=[_unit(pictures["photo"], module="canny", processor_res=64, mask=pictures["scribble"])],
    )
    scribble = Image.open(pictures["scribble"]).convert("RGB")
    expected = preprocess("canny", scribble, resolution=64)
    assert np.array_equal(np.asarray(drawn.detected_maps[0]), np.asarray(expected))
    # a blank mask changes nothing
    blank = Path(pictures["left"]).with_name("blank.png")
    Image.new("L", (64, 64), 0).save(blank)
    same = _run(cn_engine, controlnet=[_unit(pictures["photo"], mask=str(blank))])
    assert same.images[0].image.tobytes() == as_is.images[0].image.tobytes()
