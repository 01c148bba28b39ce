"""A1111's own HTTP test suite, ported to run against a real ``sdfleet up`` (issue 16).

The tests mirror AUTOMATIC1111/stable-diffusion-webui's ``test/`` directory, the files that talk to a
running web UI over HTTP (as read at upstream commits ``3250df9`` conftest, ``d6b16bb`` txt2img,
``4608f62`` img2img, ``01a40c6`` extras, ``f8391b8`` utils):

- ``test/conftest.py`` — the ``img2img_basic_image_base64`` and ``mask_basic_image_base64`` fixtures
  (``base_url`` comes from the pytest-base-url plugin there, set to ``http://127.0.0.1:7860`` in
  upstream's ``pyproject.toml``; here it is a fixture giving the server under test);
- ``test/test_txt2img.py`` — 12 tests (10 functions, one parametrized over 3 samplers);
- ``test/test_img2img.py`` — 4 tests;
- ``test/test_extras.py`` — 3 tests;
- ``test/test_utils.py`` — 10 tests (``test_options_write`` and ``test_get_api_url`` over 9 URLs).

29 tests in all. Every test keeps its upstream name, its payload fields and values and its assertions
(only the status code, 200, as upstream checks), and uses ``requests`` as upstream does. Upstream's
payloads are already small (64×64, 3 steps); the adaptations, each marked ``# Adaptation:`` where it is
made, are only those a port needs:

1. the server: upstream expects a web UI someone started by hand on port 7860; here a module fixture
   starts ``sdfleet up`` (two CPU workers, the tiny random SD 1.x checkpoint) on a free port;
2. the pictures: upstream reads ``test/test_files/img2img_basic.png`` and ``mask_basic.png``, which
   we cannot download, so they are drawn here with PIL (small, 64×64) and encoded the same way;
3. timeouts: upstream's ``requests`` calls have none; a finite one is given so a hang fails the test.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from tests.browser.helpers import LiveServer, start_sdfleet

pytestmark = [pytest.mark.slow, pytest.mark.engine]

# Adaptation 3: upstream's calls wait forever; a generous finite timeout (CPU, two workers) instead.
TIMEOUT = 300


# --- test/conftest.py ---------------------------------------------------------------------------


def picture_to_base64(image: Image.Image) -> str:
    """A PNG as upstream's ``file_to_base64`` encodes its test files: a ``data:image/png`` URL."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models: Any) -> Iterator[LiveServer]:
    """Adaptation 1: a real ``sdfleet up`` on the real diffusers engine and the tiny random SD 1.x
    checkpoint, so the suite runs in seconds on CPU. A tiny Real-ESRGAN file is registered under
    A1111's own name so ``/sdapi/v1/upscalers`` and ``/sdapi/v1/realesrgan-models`` list a model
    upscaler, as a stock web UI does."""
    tmp = tmp_path_factory.mktemp("a1111-suite")
    upscaler = tmp / "RealESRGAN_x4plus.safetensors"
    shutil.copy(tiny_models.rrdb_file, upscaler)
    command = ["up", "--workers", "2", "--engine", "diffusers", "--model", str(tiny_models.sd1_file)]
    live = start_sdfleet(tmp, [*command, "--upscaler", str(upscaler)])
    yield live
    live.stop()


@pytest.fixture(scope="module")
def base_url(server: LiveServer) -> str:
    """Adaptation 1: upstream's ``base_url`` (pytest-base-url), pointed at the server under test."""
    return server.url


@pytest.fixture(scope="session")
def img2img_basic_image_base64() -> str:
    """Adaptation 2: upstream's ``img2img_basic.png``, a simple drawing, drawn here: sky, a hill, a sun."""
    image = Image.new("RGB", (64, 64), (120, 170, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((-16, 36, 80, 100), fill=(70, 150, 60))
    draw.ellipse((40, 6, 56, 22), fill=(250, 210, 40))
    return picture_to_base64(image)


@pytest.fixture(scope="session")
def mask_basic_image_base64() -> str:
    """Adaptation 2: upstream's ``mask_basic.png``, drawn here: white (repaint) on black (keep),
    the size of the init image."""
    mask = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(mask).ellipse((16, 16, 48, 48), fill=(255, 255, 255))
    return picture_to_base64(mask)


# --- test/test_txt2img.py -----------------------------------------------------------------------


@pytest.fixture
def url_txt2img(base_url: str) -> str:
    return f"{base_url}/sdapi/v1/txt2img"


@pytest.fixture
def simple_txt2img_request() -> dict[str, Any]:
    return {
        "batch_size": 1,
        "cfg_scale": 7,
        "denoising_strength": 0,
        "enable_hr": False,
        "eta": 0,
        "firstphase_height": 0,
        "firstphase_width": 0,
        "height": 64,
        "n_iter": 1,
        "negative_prompt": "",
        "prompt": "example prompt",
        "restore_faces": False,
        "s_churn": 0,
        "s_noise": 1,
        "s_tmax": 0,
        "s_tmin": 0,
        "sampler_index": "Euler a",
        "seed": -1,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "steps": 3,
        "styles": [],
        "subseed": -1,
        "subseed_strength": 0,
        "tiling": False,
        "width": 64,
    }


def test_txt2img_simple_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_with_negative_prompt_performed(
    url_txt2img: str, simple_txt2img_request: dict[str, Any]
) -> None:
    simple_txt2img_request["negative_prompt"] = "example negative prompt"
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_with_complex_prompt_performed(
    url_txt2img: str, simple_txt2img_request: dict[str, Any]
) -> None:
    simple_txt2img_request["prompt"] = (
        "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"
    )
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_not_square_image_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    simple_txt2img_request["height"] = 128
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_with_hrfix_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    simple_txt2img_request["enable_hr"] = True
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_with_tiling_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    simple_txt2img_request["tiling"] = True
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_with_restore_faces_performed(
    url_txt2img: str, simple_txt2img_request: dict[str, Any]
) -> None:
    simple_txt2img_request["restore_faces"] = True
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("sampler", ["PLMS", "DDIM", "UniPC"])
def test_txt2img_with_vanilla_sampler_performed(
    url_txt2img: str, simple_txt2img_request: dict[str, Any], sampler: str
) -> None:
    simple_txt2img_request["sampler_index"] = sampler
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_multiple_batches_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    simple_txt2img_request["n_iter"] = 2
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


def test_txt2img_batch_performed(url_txt2img: str, simple_txt2img_request: dict[str, Any]) -> None:
    simple_txt2img_request["batch_size"] = 2
    assert requests.post(url_txt2img, json=simple_txt2img_request, timeout=TIMEOUT).status_code == 200


# --- test/test_img2img.py -----------------------------------------------------------------------


@pytest.fixture
def url_img2img(base_url: str) -> str:
    return f"{base_url}/sdapi/v1/img2img"


@pytest.fixture
def simple_img2img_request(img2img_basic_image_base64: str) -> dict[str, Any]:
    return {
        "batch_size": 1,
        "cfg_scale": 7,
        "denoising_strength": 0.75,
        "eta": 0,
        "height": 64,
        "include_init_images": False,
        "init_images": [img2img_basic_image_base64],
        "inpaint_full_res": False,
        "inpaint_full_res_padding": 0,
        "inpainting_fill": 0,
        "inpainting_mask_invert": False,
        "mask": None,
        "mask_blur": 4,
        "n_iter": 1,
        "negative_prompt": "",
        "override_settings": {},
        "prompt": "example prompt",
        "resize_mode": 0,
        "restore_faces": False,
        "s_churn": 0,
        "s_noise": 1,
        "s_tmax": 0,
        "s_tmin": 0,
        "sampler_index": "Euler a",
        "seed": -1,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "steps": 3,
        "styles": [],
        "subseed": -1,
        "subseed_strength": 0,
        "tiling": False,
        "width": 64,
    }


def test_img2img_simple_performed(url_img2img: str, simple_img2img_request: dict[str, Any]) -> None:
    assert requests.post(url_img2img, json=simple_img2img_request, timeout=TIMEOUT).status_code == 200


def test_inpainting_masked_performed(
    url_img2img: str, simple_img2img_request: dict[str, Any], mask_basic_image_base64: str
) -> None:
    simple_img2img_request["mask"] = mask_basic_image_base64
    assert requests.post(url_img2img, json=simple_img2img_request, timeout=TIMEOUT).status_code == 200


def test_inpainting_with_inverted_masked_performed(
    url_img2img: str, simple_img2img_request: dict[str, Any], mask_basic_image_base64: str
) -> None:
    simple_img2img_request["mask"] = mask_basic_image_base64
    simple_img2img_request["inpainting_mask_invert"] = True
    assert requests.post(url_img2img, json=simple_img2img_request, timeout=TIMEOUT).status_code == 200


def test_img2img_sd_upscale_performed(url_img2img: str, simple_img2img_request: dict[str, Any]) -> None:
    simple_img2img_request["script_name"] = "sd upscale"
    simple_img2img_request["script_args"] = ["", 8, "Lanczos", 2.0]
    assert requests.post(url_img2img, json=simple_img2img_request, timeout=TIMEOUT).status_code == 200


# --- test/test_extras.py ------------------------------------------------------------------------


def test_simple_upscaling_performed(base_url: str, img2img_basic_image_base64: str) -> None:
    payload: dict[str, Any] = {
        "resize_mode": 0,
        "show_extras_results": True,
        "gfpgan_visibility": 0,
        "codeformer_visibility": 0,
        "codeformer_weight": 0,
        "upscaling_resize": 2,
        "upscaling_resize_w": 128,
        "upscaling_resize_h": 128,
        "upscaling_crop": True,
        "upscaler_1": "Lanczos",
        "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0,
        "image": img2img_basic_image_base64,
    }
    response = requests.post(f"{base_url}/sdapi/v1/extra-single-image", json=payload, timeout=TIMEOUT)
    assert response.status_code == 200


# Upstream posts these two to extra-single-image too (not png-info / interrogate); kept as it is.
def test_png_info_performed(base_url: str, img2img_basic_image_base64: str) -> None:
    payload = {
        "image": img2img_basic_image_base64,
    }
    response = requests.post(f"{base_url}/sdapi/v1/extra-single-image", json=payload, timeout=TIMEOUT)
    assert response.status_code == 200


def test_interrogate_performed(base_url: str, img2img_basic_image_base64: str) -> None:
    payload = {
        "image": img2img_basic_image_base64,
        "model": "clip",
    }
    response = requests.post(f"{base_url}/sdapi/v1/extra-single-image", json=payload, timeout=TIMEOUT)
    assert response.status_code == 200


# --- test/test_utils.py -------------------------------------------------------------------------


def test_options_write(base_url: str) -> None:
    url_options = f"{base_url}/sdapi/v1/options"
    response = requests.get(url_options, timeout=TIMEOUT)
    assert response.status_code == 200

    pre_value = response.json()["send_seed"]

    assert requests.post(url_options, json={"send_seed": (not pre_value)}, timeout=TIMEOUT).status_code == 200

    response = requests.get(url_options, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["send_seed"] == (not pre_value)

    requests.post(url_options, json={"send_seed": pre_value}, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "url",
    [
        "sdapi/v1/cmd-flags",
        "sdapi/v1/samplers",
        "sdapi/v1/upscalers",
        "sdapi/v1/sd-models",
        "sdapi/v1/hypernetworks",
        "sdapi/v1/face-restorers",
        "sdapi/v1/realesrgan-models",
        "sdapi/v1/prompt-styles",
        "sdapi/v1/embeddings",
    ],
)
def test_get_api_url(base_url: str, url: str) -> None:
    assert requests.get(f"{base_url}/{url}", timeout=TIMEOUT).status_code == 200
