"""`sdfleet up --controlnet IP-ADAPTER --image-encoder ENCODER` with the real diffusers engine on the tiny
models: both are registered with the arch read from the files; an A1111 client's IP-Adapter unit
(``alwayson_scripts.controlnet``, module ``ip-adapter_clip_sd15``-style, model ``name [hash]``) runs on the
local worker, which fetched the encoder chosen at submit; the image prompt changes the picture against the
same seed without it; an SDXL adapter on the SD 1.x checkpoint is a 422 naming the unit's field."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.e2e.test_up_diffusers import sdfleet_up

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_up_runs_an_a1111_ip_adapter_unit(tmp_path: Path, tiny_models: Any) -> None:
    reference = Image.new("RGB", (40, 40), (200, 30, 30))
    ImageDraw.Draw(reference).ellipse((8, 8, 32, 32), fill=(250, 220, 40))
    with sdfleet_up(
        tmp_path / "data",
        "--model",
        str(tiny_models.sd1_file),
        "--controlnet",
        str(tiny_models.ip_adapter_sd1_file),
        "--controlnet",
        str(tiny_models.ip_adapter_sdxl_file),
        "--image-encoder",
        str(tiny_models.image_encoder_file),
    ) as client:
        adapters = {
            m["name"]: m["arch"]
            for m in client.get("/v1/models", params={"kind": "ip_adapter"}).json()["models"]
        }
        assert adapters == {"tiny-ip-adapter_sd15": "sd1-p24", "tiny-ip-adapter_sdxl": "sdxl-p24"}
        encoders = client.get("/v1/models", params={"kind": "image_encoder"}).json()["models"]
        assert [(m["name"], m["arch"]) for m in encoders] == [("tiny-clip-vision", "clip-24-32")]
        body: dict[str, Any] = {"prompt": "a cat", "width": 32, "height": 32, "steps": 3, "seed": 7}
        plain = client.post("/sdapi/v1/txt2img", json=body, timeout=180)
        assert plain.status_code == 200, plain.text
        unit = {
            "module": "ip-adapter-auto",
            "model": "tiny-ip-adapter_sd15 [0123abcd]",
            "image": _b64(reference),
        }
        steered = client.post(
            "/sdapi/v1/txt2img",
            json={**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}},
            timeout=180,
        )
        assert steered.status_code == 200, steered.text
        assert steered.json()["images"][0] != plain.json()["images"][0]
        info = steered.json()["info"]
        assert 'ControlNet 0: \\"Module: ip-adapter-auto, Model: tiny-ip-adapter_sd15 [' in info
        wrong = {**unit, "model": "tiny-ip-adapter_sdxl"}
        on_sd1 = {
            **body,
            "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
        }  # the family known at submit
        r = client.post(
            "/sdapi/v1/txt2img", json={**on_sd1, "alwayson_scripts": {"controlnet": {"args": [wrong]}}}
        )
        assert r.status_code == 422 and "controlnet" in r.text and "SDXL" in r.text, r.text
