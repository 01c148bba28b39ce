"""Upscaler nets on real tiny files: family and scale read from the header, ESRGAN's two key layouts, tiled
equals untiled, the fp32 fallback, pickles refused or converted, and A1111's Extras sizes through nets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdfleet.engine.pool import NetPool
from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.engine.upscale.detect import ESRGAN, SRVGG, a1111_name, detect_net
from sdfleet.engine.upscale.extras import run_extras
from sdfleet.engine.upscale.loader import convert_pickle, load_upscaler
from sdfleet.engine.upscale.tiles import Precision, run_tiled
from sdfleet.errors import ValidationError
from sdfleet.specs.upscale import UpscaleSpec
from sdfleet.testing.tiny_models import TinyModels, write_tiny_upscaler


def _picture(width: int = 150, height: int = 100) -> Image.Image:
    """A picture with edges, gradients and flat areas (what seams would show on)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x // 16 + y // 16) % 2) * 200], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


@pytest.mark.parametrize(
    ("family", "scale", "layout"),
    [
        ("esrgan", 4, "new"),
        ("esrgan", 4, "old"),
        ("esrgan", 8, "old"),
        ("esrgan", 2, "new"),
        ("srvgg", 4, "new"),
        ("srvgg", 2, "new"),
    ],
)
def test_family_and_scale_are_read_from_the_header(
    tmp_path: Path, family: str, scale: int, layout: str
) -> None:
    path = write_tiny_upscaler(tmp_path / "net.safetensors", family, scale=scale, layout=layout)  # type: ignore[arg-type]
    info = detect_net(read_header(path).shapes)
    assert (info.family, info.scale, info.layout) == (family, scale, layout if family == ESRGAN else "new")
    net = load_upscaler(path, device="cpu", use_spandrel=False)
    assert net.upscale(_picture(40, 24), tile=64).size == (40 * scale, 24 * scale)


def test_basicsr_x2_models_unshuffle_their_input(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from sdfleet.engine.upscale.detect import NetInfo
    from sdfleet.engine.upscale.nets import build_net

    net = build_net(NetInfo(family=ESRGAN, scale=2, features=8, growth=4, blocks=1, unshuffle=2))
    path = tmp_path / "RealESRGAN_x2plus.safetensors"
    save_file({f"params_ema.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path))
    info = detect_net(read_header(path).shapes)
    assert (info.scale, info.unshuffle) == (2, 2)
    assert load_upscaler(path, device="cpu", use_spandrel=False).upscale(_picture(32, 16)).size == (64, 32)
    assert a1111_name(path.stem) == "R-ESRGAN 2x+"


def test_esrgans_two_key_layouts_are_the_same_net(tmp_path: Path) -> None:
    new = load_upscaler(write_tiny_upscaler(tmp_path / "a.safetensors", "esrgan", seed=5), device="cpu")
    old = load_upscaler(
        write_tiny_upscaler(tmp_path / "b.safetensors", "esrgan", seed=5, layout="old"), device="cpu"
    )
    picture = _picture(48, 32)
    assert np.array_equal(np.asarray(new.upscale(picture)), np.asarray(old.upscale(picture)))


def test_not_an_upscaler_is_refused_naming_the_model(tiny: TinyModels) -> None:
    with pytest.raises(ValidationError) as caught:
        detect_net(read_header(tiny.sd1_file).shapes)
    assert caught.value.field == "model" and "spandrel" in str(caught.value)


@pytest.mark.parametrize("family", [ESRGAN, SRVGG])
def test_tiled_equals_untiled_within_one_level(tmp_path: Path, family: str) -> None:
    """Tiles of 48 px overlapping by 16 (12 tiles over 150×100) against one pass over the whole picture:
    the feathered blend leaves at most 2 of 255 levels anywhere and under 0.1 on average."""
    net = load_upscaler(write_tiny_upscaler(tmp_path / "n.safetensors", family, seed=2), device="cpu")  # type: ignore[arg-type]
    picture = _picture()
    seen: list[tuple[int, int]] = []
    whole = np.asarray(net.upscale(picture, tile=1024), dtype=np.int16)
    tiled = np.asarray(
        net.upscale(picture, tile=48, on_tile=lambda d, t: seen.append((d, t))), dtype=np.int16
    )
    assert seen[-1] == (12, 12)
    diff = np.abs(whole - tiled)
    assert diff.max() <= 2 and diff.mean() < 0.1
    assert whole.std() > 2  # not a flat picture


def test_a_reduced_precision_tile_that_comes_back_nan_is_rerun_in_fp32() -> None:
    """A net that overflows in reduced precision (NaN), as fp16 ESRGANs do on some inputs: the tile is rerun
    in fp32 and the net stays in fp32 for the next tiles."""
    dtypes: list[torch.dtype] = []

    def net(x: torch.Tensor) -> torch.Tensor:
        dtypes.append(x.dtype)
        up = torch.nn.functional.interpolate(x.float(), scale_factor=2, mode="nearest")
        return up * float("nan") if x.dtype == torch.bfloat16 else up

    moved: list[bool] = []
    precision = Precision(torch.bfloat16)
    image = torch.rand(1, 3, 40, 40)
    out = run_tiled(
        net,
        image,
        scale=2,
        device="cpu",
        precision=precision,
        to_fp32=lambda: moved.append(True),
        tile=32,
        overlap=8,
    )
    assert torch.isfinite(out).all() and out.shape == (1, 3, 80, 80)
    assert precision.fell_back and moved == [True]
    assert dtypes == [torch.bfloat16, torch.float32, torch.float32, torch.float32, torch.float32]
    assert torch.allclose(
        out, torch.nn.functional.interpolate(image, scale_factor=2, mode="nearest"), atol=1e-6
    )


def test_pickles_are_refused_and_convert_only_as_weights(tmp_path: Path) -> None:
    source = write_tiny_upscaler(tmp_path / "n.safetensors", "srvgg", seed=1)
    from safetensors.torch import load_file

    pth = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": load_file(str(source))}, str(pth))
    with pytest.raises(ValidationError, match="convert"):
        load_upscaler(pth, device="cpu")
    converted = tmp_path / "converted.safetensors"
    info = convert_pickle(pth, converted)
    assert info is not None and (info.family, info.scale) == (SRVGG, 4)
    picture = _picture(30, 20)
    assert np.array_equal(
        np.asarray(load_upscaler(converted, device="cpu").upscale(picture)),
        np.asarray(load_upscaler(source, device="cpu").upscale(picture)),
    )

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    torch.save({"params": Payload()}, str(evil))
    with pytest.raises(ValidationError, match="weights-only"):
        convert_pickle(evil, tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()


def _extras(tiny: TinyModels, picture: Image.Image, **fields: object) -> Image.Image:
    spec = UpscaleSpec.model_validate(
        {"image": "input:x", "input_width": picture.width, "input_height": picture.height, **fields}
    )
    nets = {"rrdb": tiny.rrdb_file, "compact": tiny.srvgg_file}
    return run_extras(picture, spec, upscalers=nets, restorers={}, pool=NetPool(), device="cpu").image


def test_extras_sizes_through_real_nets(tiny: TinyModels) -> None:
    picture = _picture(40, 30)
    tiles: list[tuple[int, int]] = []
    spec = UpscaleSpec.model_validate(
        {
            "image": "input:x",
            "input_width": 40,
            "input_height": 30,
            "upscaler_1": "compact",
            "upscaling_resize": 8,
        }
    )
    out = run_extras(
        picture,
        spec,
        upscalers={"compact": tiny.srvgg_file},
        restorers={},
        pool=NetPool(),
        device="cpu",
        on_progress=lambda done, total: tiles.append((done, total)),
    )
    assert out.image.size == (320, 240) and tiles == [(1, 1), (1, 1)]  # 8× from a 4× model: two passes
    assert _extras(tiny, picture, upscaler_1="rrdb", upscaling_resize=2).size == (80, 56)  # floored to ÷8
    assert _extras(tiny, picture, upscaler_1="rrdb", upscaling_resize=2.5).size == (96, 72)  # floored to ÷8
    scaled_to = dict(resize_mode="scale_to", upscaling_resize_w=100, upscaling_resize_h=100)
    assert _extras(tiny, picture, upscaler_1="compact", upscaling_crop=False, **scaled_to).size == (128, 96)
    cropped = _extras(tiny, picture, upscaler_1="compact", upscaling_crop=True, **scaled_to)
    assert cropped.size == (100, 100)
    blended = _extras(
        tiny,
        picture,
        upscaler_1="rrdb",
        upscaler_2="compact",
        extras_upscaler_2_visibility=0.5,
        upscaling_resize=4,
    )
    first = _extras(tiny, picture, upscaler_1="rrdb", upscaling_resize=4)
    second = _extras(tiny, picture, upscaler_1="compact", upscaling_resize=4)
    mid = (np.asarray(first, dtype=np.float32) + np.asarray(second, dtype=np.float32)) / 2
    assert blended.size == (160, 120) and np.abs(np.asarray(blended, dtype=np.float32) - mid).max() <= 1.0
