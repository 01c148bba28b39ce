"""webuiapi, unchanged, drives the ControlNet extension's API against a real ``sdfleet up`` (diffusers
engine, tiny SD 1.x and SDXL checkpoints, tiny ControlNets for both): txt2img and img2img with one and two
units, every control mode and resize mode label, ``images`` = n_iter·batch_size pictures and then one
detected map per unit, the model list and the detect route; a unit changes the picture against the same
seed without it; an SD 1.x net on the SDXL checkpoint is a 422 naming the unit's field."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.e2e.test_up_diffusers import sdfleet_up

pytestmark = [pytest.mark.slow, pytest.mark.engine]

webuiapi = pytest.importorskip("webuiapi")

NET = "tiny-controlnet-sd1"


def _edges() -> Image.Image:
    image = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), outline="white", width=2)
    return image


def _photo() -> Image.Image:
    image = Image.new("RGB", (32, 32), (40, 90, 160))
    ImageDraw.Draw(image).rectangle((8, 8, 24, 24), fill=(220, 200, 40))
    return image


def _bytes(images: list[Image.Image]) -> list[bytes]:
    out = []
    for image in images:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_webuiapi_drives_controlnet_units(tmp_path: Path, tiny_models: Any) -> None:
    data = tmp_path / "data"
    subprocess.run(  # a second checkpoint, of another family, in the same registry
        [
            sys.executable,
            "-m",
            "sdfleet",
            "models",
            "add",
            "tiny-sdxl",
            str(tiny_models.sdxl_file),
            "--data-dir",
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    with sdfleet_up(
        data,
        "--model",
        str(tiny_models.sd1_file),
        "--controlnet",
        str(tiny_models.controlnet_sd1_file),
        "--controlnet",
        str(tiny_models.controlnet_sdxl_file),
    ) as client:
        port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
        names = api.controlnet_model_list()
        assert any(n.startswith(f"{NET} [") for n in names), names
        sd1_net = next(n for n in names if n.startswith(f"{NET} ["))
        base: dict[str, Any] = {
            "prompt": "a circle",
            "width": 32,
            "height": 32,
            "steps": 3,
            "seed": 11,
            "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
        }

        def unit(**kw: Any) -> Any:
            return webuiapi.ControlNetUnit(**{"image": _edges(), "module": "none", "model": sd1_net, **kw})

        plain = api.txt2img(**base, alwayson_scripts={})
        assert len(plain.images) == 1

        # one unit, every control mode: n_iter·batch_size pictures, then the unit's map
        pictures: dict[int, bytes] = {}
        for mode in (0, 1, 2):
            r = api.txt2img(
                **base,
                batch_size=2,
                n_iter=1,
                controlnet_units=[unit(weight=1.5, control_mode=mode)],
                alwayson_scripts={},
            )
            assert len(r.images) == 2 + 1, (mode, len(r.images))
            assert len(r.info["infotexts"]) == 2
            label = ("Balanced", "My prompt is more important", "ControlNet is more important")[mode]
            assert f"Control Mode: {label}" in r.info["infotexts"][0]
            pictures[mode] = _bytes(r.images[:1])[0]
        assert len(set(pictures.values())) == 3  # the modes steer differently
        assert _bytes(plain.images)[0] not in pictures.values()  # a unit changes the picture, same seed

        # two units (canny preprocessed, resize mode labels) over n_iter 2: 2 pictures then 2 maps
        r = api.txt2img(
            **base,
            n_iter=2,
            controlnet_units=[
                unit(module="canny", resize_mode="Just Resize"),
                unit(weight=0.5, resize_mode="Resize and Fill", guidance_start=0.2, guidance_end=0.8),
            ],
            alwayson_scripts={},
        )
        assert len(r.images) == 2 + 2
        info = r.info["infotexts"][0]
        assert 'ControlNet 0: "Module: canny' in info and "Resize Mode: Just Resize" in info
        assert 'ControlNet 1: "Module: none' in info and "Resize Mode: Resize and Fill" in info
        assert "Guidance Start: 0.2, Guidance End: 0.8" in info
        edges = r.images[2].convert("L")
        assert set(np.unique(np.asarray(edges)).tolist()) == {0, 255}  # canny's map: edges only

        # img2img with one and with two units
        for units in ([unit()], [unit(), unit(module="invert", weight=0.7, resize_mode="Crop and Resize")]):
            r = api.img2img(
                images=[_photo()],
                prompt="a square",
                width=32,
                height=32,
                steps=3,
                seed=3,
                denoising_strength=0.6,
                override_settings={"sd_model_checkpoint": "tiny-sd1"},
                controlnet_units=units,
                alwayson_scripts={},
            )
            assert len(r.images) == 1 + len(units)
            assert f'ControlNet {len(units) - 1}: "Module: ' in r.info["infotexts"][0]

        detected = api.controlnet_detect([_edges()], module="canny", processor_res=64)
        assert detected.info == "Success" and len(detected.images) == 1

        # an SD 1.x net on the SDXL checkpoint: a 422 naming the unit's field, nothing run
        body = {
            **base,
            "override_settings": {"sd_model_checkpoint": "tiny-sdxl"},
            "alwayson_scripts": {"controlnet": {"args": [unit().to_dict()]}},
        }
        wrong = client.post("/sdapi/v1/txt2img", json=body)
        assert wrong.status_code == 422, wrong.text
        assert "alwayson_scripts.controlnet.args.0.model" in wrong.text and "SDXL" in wrong.text
