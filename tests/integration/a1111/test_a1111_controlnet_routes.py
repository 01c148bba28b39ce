"""The ControlNet extension's read routes: clients that probe for the extension find its version, unit
count, the registered nets titled ``name [sha8]``, the preprocessors with their sliders, and the control
types; ``/controlnet/detect`` runs the model-free modules as the extension answers, under both image field
names (webuiapi's too), refusing bad requests with a 4xx naming the field."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdfleet.annotators.run import preprocess
from tests.integration.a1111.conftest import BASIC_PASSWORD, checkpoint_body
from tests.support.live import Orchestrator


async def test_the_extensions_routes_list_what_this_server_runs(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await api.get("/controlnet/version")).json() == {"version": 2}
    assert (await api.get("/controlnet/settings")).json() == {"control_net_unit_count": 4}
    assert (await api.get("/controlnet/model_list")).json() == {"model_list": []}
    body = checkpoint_body(tmp_path, "control_v11p_sd15_canny", kind="controlnet")
    assert (await admin.post("/v1/models", json=body)).status_code == 201
    sha8 = hashlib.sha256(b"weights of control_v11p_sd15_canny").hexdigest()[:8]
    title = f"control_v11p_sd15_canny [{sha8}]"
    assert (await api.get("/controlnet/model_list", params={"update": "true"})).json() == {
        "model_list": [title]
    }
    modules = (await api.get("/controlnet/module_list")).json()
    assert modules["module_list"][:2] == ["none", "canny"]
    canny = modules["module_detail"]["canny"]
    assert canny["model_free"] is False  # the extension: no ControlNet model needed (reference_*)
    assert canny["sliders"] == [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
    ]
    for name in (
        "blur_gaussian",
        "scribble_xdog",
        "shuffle",
        "tile_resample",
        "tile_colorfix+sharp",
        "inpaint_only",
    ):
        assert name in modules["module_list"]
    assert modules["module_detail"]["tile_resample"]["sliders"] == [
        {"name": "Down Sampling Rate", "value": 1.0, "min": 1.0, "max": 8.0, "step": 0.01}
    ]
    assert modules["module_detail"]["inpaint"]["sliders"] == []
    labels = (await api.get("/controlnet/module_list", params={"alias_names": "true"})).json()
    assert "invert (from white bg & black line)" in labels["module_list"]
    assert "inpaint_global_harmonious" in labels["module_detail"] and "invert" not in labels["module_list"]
    types = (await api.get("/controlnet/control_types")).json()["control_types"]
    assert types["Tile"]["module_list"][:2] == ["none", "blur_gaussian"] and "Inpaint" in types
    assert types["Canny"]["default_model"] == title and "canny" in types["All"]["module_list"]


# ------------------------------------------------------------------------ POST /controlnet/detect


def _drawing_b64(size: tuple[int, int] = (96, 64)) -> tuple[Image.Image, str]:
    image = Image.new("RGB", size, (240, 230, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 8, size[0] - 20, size[1] - 10), fill=(30, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return image, base64.b64encode(buffer.getvalue()).decode()


def _decoded(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


async def test_detect_runs_a_model_free_module_under_either_images_field(api: httpx.AsyncClient) -> None:
    image, data = _drawing_b64()
    expected = np.asarray(preprocess("canny", image, resolution=128, threshold_a=50, threshold_b=150))
    for field in ("controlnet_input_images", "controlnet_images"):
        body = {
            "controlnet_module": "canny",
            field: [data, data],
            "controlnet_processor_res": 128,
            "controlnet_threshold_a": 50,
            "controlnet_threshold_b": 150,
            "low_vram": False,
        }
        response = await api.post("/controlnet/detect", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["info"] == "Success" and len(answer["images"]) == 2
        assert np.array_equal(_decoded(answer["images"][0]), expected)
    # the extension's -1 ("not given") means the module's defaults
    defaults = await api.post(
        "/controlnet/detect",
        json={"controlnet_module": "canny", "controlnet_input_images": [data], "controlnet_threshold_a": -1},
    )
    assert np.array_equal(_decoded(defaults.json()["images"][0]), np.asarray(preprocess("canny", image)))


async def test_detect_inpaint_needs_masks_and_shows_the_masked_part(api: httpx.AsyncClient) -> None:
    image, data = _drawing_b64((64, 64))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_b64 = base64.b64encode(buffer.getvalue()).decode()
    missing = await api.post(
        "/controlnet/detect", json={"controlnet_module": "inpaint_only", "controlnet_input_images": [data]}
    )
    assert missing.status_code == 422 and "controlnet_masks" in missing.text
    shown = await api.post(
        "/controlnet/detect",
        json={
            "controlnet_module": "inpaint_only",
            "controlnet_input_images": [data],
            "controlnet_masks": [mask_b64],
        },
    )
    rgba = _decoded(shown.json()["images"][0])
    assert rgba.shape == (64, 64, 4) and rgba[0, 0, 3] == 128 and rgba[0, 63, 3] == 255


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"controlnet_module": "canny"}, 422, "No image selected"),
        ({"controlnet_module": "no-such-module", "controlnet_input_images": ["x"]}, 422, "controlnet_module"),
        ({"controlnet_module": "depth_midas", "controlnet_input_images": ["x"]}, 422, "annotate worker"),
        (
            {"controlnet_module": "canny", "controlnet_input_images": ["%%%not base64"]},
            422,
            "controlnet_input_images.0",
        ),
        ({"controlnet_module": "canny", "controlnet_images": ["aGVsbG8="]}, 422, "controlnet_images.0"),
        ({"controlnet_module": "canny", "controlnet_input_images": ["aGVsbG8="] * 17}, 422, "limit is 16"),
        ({"controlnet_module": "canny", "controlnet_input_images": "one"}, 422, "controlnet_input_images"),
    ],
)
async def test_detect_refuses_bad_requests_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, text: str
) -> None:
    response = await api.post("/controlnet/detect", json=body)
    assert response.status_code == status, response.text
    assert text in response.text


async def test_detect_refuses_a_picture_over_the_pixel_limit_before_decoding_it(
    api: httpx.AsyncClient,
) -> None:
    huge = Image.new("RGB", (8000, 8000), "white")  # 64 Mpx: over the input limit, tiny as a PNG
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    response = await api.post(
        "/controlnet/detect",
        json={
            "controlnet_module": "canny",
            "controlnet_input_images": [base64.b64encode(buffer.getvalue()).decode()],
        },
    )
    assert response.status_code == 422 and "limit_exceeded" in response.text
    assert "controlnet_input_images.0" in response.text


async def test_webuiapi_controlnet_detect_works_unchanged(
    orchestrator: Orchestrator, basic_user: str
) -> None:
    webuiapi = pytest.importorskip("webuiapi")
    client = webuiapi.WebUIApi(
        host="127.0.0.1", port=orchestrator.settings.port, username=basic_user, password=BASIC_PASSWORD
    )
    image, _ = _drawing_b64()
    result = await asyncio.to_thread(client.controlnet_detect, [image], module="canny")
    assert result.info == "Success" and len(result.images) == 1
    expected = preprocess(
        "canny", image, resolution=512, threshold_a=64, threshold_b=64
    )  # webuiapi's defaults
    assert np.array_equal(np.asarray(result.images[0].convert("RGB")), np.asarray(expected))


async def test_a_units_bad_mask_is_refused_at_submit_naming_its_field(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = checkpoint_body(tmp_path, "control_v11p_sd15_canny", kind="controlnet")
    assert (await admin.post("/v1/models", json=body)).status_code in (201, 409)
    _, picture = _drawing_b64()
    for unit, field in (
        ({"image": {"image": picture, "mask": "%%%"}}, "controlnet.0.mask"),
        ({"image": picture, "effective_region_mask": "aGVsbG8="}, "controlnet.0.effective_region_mask"),
    ):
        request = {
            "prompt": "x",
            "steps": 2,
            "alwayson_scripts": {"controlnet": {"args": [{"model": "control_v11p_sd15_canny", **unit}]}},
        }
        response = await api.post("/sdapi/v1/txt2img", json=request)
        assert response.status_code == 422 and field in response.text, response.text


async def test_ip_adapters_are_listed_with_the_nets(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    for name, kind in (("control_v11p_sd15_canny", "controlnet"), ("ip-adapter_sd15", "ip_adapter")):
        body = checkpoint_body(tmp_path, name, kind=kind)
        body["arch"] = "sd1-vit-h" if kind == "ip_adapter" else "sd1"
        assert (await admin.post("/v1/models", json=body)).status_code == 201, name
    listed = (await api.get("/controlnet/model_list")).json()["model_list"]
    assert [t.split(" [")[0] for t in listed] == ["control_v11p_sd15_canny", "ip-adapter_sd15"]
    modules = (await api.get("/controlnet/module_list")).json()
    assert "ip-adapter_clip_sd15" in modules["module_list"]
    assert modules["module_detail"]["ip-adapter_clip_sd15"] == {"model_free": False, "sliders": []}
    types = (await api.get("/controlnet/control_types")).json()["control_types"]
    assert types["IP-Adapter"]["default_model"].startswith("ip-adapter_sd15 [")
    assert "ip-adapter_clip_sdxl" in types["IP-Adapter"]["module_list"]
    assert types["Canny"]["model_list"] == ["None", listed[0]]
    body = {"controlnet_module": "ip-adapter_clip_sd15", "controlnet_input_images": [_drawing_b64()[1]]}
    refused = await api.post("/controlnet/detect", json=body)
    assert refused.status_code == 422 and "no control map" in refused.text, refused.text
