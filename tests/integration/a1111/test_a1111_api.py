"""The A1111 routes that need no worker, under TestClient: the lists clients read, per-tenant options,
Basic auth, A1111's error envelope, and every bad input refused with an A1111-style 4xx before any job is
stored."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image

from sdfleet.api.app import create_app
from sdfleet.api.errors import is_a1111_path
from sdfleet.api.routes import a1111 as a1111_routes
from sdfleet.config import Settings
from sdfleet.domain import JobState
from tests.integration.a1111.conftest import NO_WORKER_TIMEOUT, checkpoint_body, png_b64, title_of
from tests.integration.api.conftest import create_key, store_of


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the tests that change nothing (the lists, refusals): starting one costs about a second."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("bad-input"),
        a1111_request_timeout=NO_WORKER_TIMEOUT,
        allowed_hosts=["testserver"],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


# ===================================================================== the lists clients read


def test_samplers_schedulers_and_upscalers_are_a1111s(shared_client: TestClient) -> None:
    client = shared_client
    samplers = client.get("/sdapi/v1/samplers").json()
    assert samplers[0] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert {"Euler a", "Euler", "DDIM", "UniPC", "LCM"} <= {s["name"] for s in samplers}
    assert all(isinstance(v, str) for s in samplers for v in s["options"].values())
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert schedulers[0] == {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1.0,
        "need_inner_model": False,
    }
    assert [s["label"] for s in schedulers][:3] == ["Automatic", "Uniform", "Karras"]
    assert client.get("/sdapi/v1/upscalers").json()[0] == {
        "name": "None",
        "model_name": None,
        "model_path": None,
        "model_url": None,
        "scale": 4.0,
    }
    modes = [m["name"] for m in client.get("/sdapi/v1/latent-upscale-modes").json()]
    assert modes[0] == "Latent" and "Latent (nearest-exact)" in modes


def test_models_come_from_the_registry_with_a1111_titles(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/sdapi/v1/sd-models").json() == []
    client.post("/v1/models", json=checkpoint_body(tmp_path, "sd15/dreamy"))
    client.post("/v1/models", json=checkpoint_body(tmp_path, "vae-ft-mse", kind="vae"))
    client.post("/v1/models", json=checkpoint_body(tmp_path, "pixel-art", kind="lora"))
    client.post("/v1/models", json=checkpoint_body(tmp_path, "easynegative", kind="embedding"))
    [model] = client.get("/sdapi/v1/sd-models").json()
    assert model["title"] == title_of("sd15/dreamy")
    assert model["model_name"] == "sd15_dreamy"
    assert model["hash"] == model["title"][-11:-1] and model["sha256"].startswith(model["hash"])
    assert model["filename"].endswith("sd15/dreamy.safetensors") and model["config"] is None
    assert client.get("/sdapi/v1/sd-vae").json() == [
        {"model_name": "vae-ft-mse", "filename": str(tmp_path / "vae-ft-mse.safetensors")}
    ]
    [lora] = client.get("/sdapi/v1/loras").json()
    assert (lora["name"], lora["alias"], lora["metadata"]) == ("pixel-art", "pixel-art", {})
    assert client.get("/sdapi/v1/embeddings").json() == {
        "loaded": {
            "easynegative": {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": None,
                "vectors": None,
            }
        },
        "skipped": {},
    }
    for path in ("refresh-checkpoints", "refresh-loras", "refresh-vae", "refresh-embeddings"):
        response = client.post(f"/sdapi/v1/{path}")
        assert response.status_code == 200 and response.json() is None


def test_the_other_routes_clients_probe(shared_client: TestClient) -> None:
    client = shared_client
    assert client.get("/internal/ping").json() == {}
    assert client.get("/sdapi/v1/prompt-styles").json() == []
    assert client.get("/sdapi/v1/extensions").json() == []
    assert client.get("/sdapi/v1/hypernetworks").json() == []
    assert client.get("/sdapi/v1/face-restorers").json() == []
    scripts = client.get("/sdapi/v1/scripts").json()
    selectable = ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
    assert scripts["txt2img"] == [*selectable, "refiner", "seed", "sampler", "comments", "controlnet"]
    img2img_only = ["loopback", "outpainting mk2", "poor man's outpainting", "sd upscale"]
    assert scripts["img2img"][:7] == [
        "loopback",
        "outpainting mk2",
        "poor man's outpainting",
        *selectable[:2],
        "sd upscale",
        selectable[2],
    ]
    info = client.get("/sdapi/v1/script-info").json()
    assert {(s["name"], s["is_img2img"]) for s in info} >= {("seed", False), ("seed", True)}
    assert all(s["is_alwayson"] == (s["name"] not in (*selectable, *img2img_only)) for s in info)
    memory = client.get("/sdapi/v1/memory").json()
    assert set(memory) == {"ram", "cuda"} and memory["ram"]["total"] > memory["ram"]["used"] > 0
    assert "error" in memory["cuda"]
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True and flags["api_auth"] is None
    assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    progress = client.get("/sdapi/v1/progress", params={"skip_current_image": True})
    assert progress.json() == {
        "progress": 0.0,
        "eta_relative": 0.0,
        "state": {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        },
        "current_image": None,
        "textinfo": None,
        "current_task": None,
    }
    assert float(progress.headers["x-process-time"]) >= 0
    assert client.post("/sdapi/v1/interrupt").json() == {}
    assert client.post("/sdapi/v1/skip").json() is None


# ===================================================================== options


def test_options_are_per_tenant_and_persist_for_every_replica(make_client: Any, tmp_path: Path) -> None:
    client = make_client()
    client.post("/v1/models", json=checkpoint_body(tmp_path, "alpha"))
    alice, bob = create_key(client, "alice", "user"), create_key(client, "bob", "user")
    defaults = client.get("/sdapi/v1/options", headers=alice).json()
    assert defaults["sd_model_checkpoint"] is None and defaults["CLIP_stop_at_last_layers"] == 1
    assert defaults["samples_format"] == "png" and defaults["sd_vae"] == "Automatic"

    body = {
        "sd_model_checkpoint": "alpha.safetensors",  # any A1111 alias; stored as the title
        "CLIP_stop_at_last_layers": 2,
        "api_forbid_local_requests": False,  # restrict_api: ignored, as A1111 does
        "some_extension_setting": 3,  # A1111 has no such setting: ignored
    }
    response = client.post("/sdapi/v1/options", json=body, headers=alice)
    assert response.status_code == 200 and response.json() is None
    mine = client.get("/sdapi/v1/options", headers=alice).json()
    assert mine["sd_model_checkpoint"] == title_of("alpha")
    assert mine["sd_checkpoint_hash"].startswith(title_of("alpha")[-11:-1])
    assert mine["CLIP_stop_at_last_layers"] == 2
    assert mine["api_forbid_local_requests"] is True and "some_extension_setting" not in mine
    assert client.get("/sdapi/v1/options", headers=bob).json()["CLIP_stop_at_last_layers"] == 1

    # another replica (a second app on the same database) sees them
    replica = make_client()
    assert replica.get("/sdapi/v1/options", headers=alice).json()["CLIP_stop_at_last_layers"] == 2


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"sd_model_checkpoint": "nope"}, "model 'nope' not found"),
        ({"CLIP_stop_at_last_layers": "two"}, "must be an integer"),
        ({"enable_pnginfo": 1}, "must be true or false"),
        ({"samples_format": ["png"]}, "must be a string"),
    ],
)
def test_bad_options_are_refused(shared_client: TestClient, body: dict[str, Any], detail: str) -> None:
    client = shared_client
    response = client.post("/sdapi/v1/options", json=body)
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1


# ===================================================================== authentication


A1111_GETS = (
    "/sdapi/v1/sd-models",
    "/sdapi/v1/loras",
    "/internal/ping",
    "/sdapi/v1/options",
    "/sdapi/v1/progress",
)


def test_basic_auth_protects_every_a1111_route(make_client: Any) -> None:
    client = make_client(a1111_api_auth="alice:wonder,bob:builder")
    user, worker = create_key(client, "ops", "user"), create_key(client, "fleet", "worker")
    for path in A1111_GETS:
        missing = client.get(path)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Basic"
        assert missing.json() == {
            "error": "AuthError",
            "detail": "Not authenticated",
            "body": "",
            "errors": "Not authenticated",
        }
        assert client.get(path, auth=("alice", "wrong")).status_code == 401
        assert client.get(path, auth=("carol", "wonder")).status_code == 401
        assert client.get(path, auth=("alice", "wonder")).status_code == 200
        assert client.get(path, headers=user).status_code == 200
        assert client.get(path, headers=worker).status_code == 403
    routes = [r for r in a1111_routes.router.routes if isinstance(r, APIRoute) and is_a1111_path(r.path)]
    assert len(routes) >= 33
    for route in routes:
        assert client.request(sorted(route.methods)[0], route.path).status_code == 401, route.path
    assert client.get("/health").status_code == 200  # the native routes keep their own rules


def test_each_basic_user_is_its_own_tenant(make_client: Any) -> None:
    client = make_client(a1111_api_auth="alice:wonder,bob:builder", a1111_request_timeout=0.2)
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 3}, auth=("alice", "wonder"))
    assert client.get("/sdapi/v1/options", auth=("alice", "wonder")).json()["CLIP_stop_at_last_layers"] == 3
    assert client.get("/sdapi/v1/options", auth=("bob", "builder")).json()["CLIP_stop_at_last_layers"] == 1
    # no worker here: the call times out (504) and its job, bob's, is canceled
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}, auth=("bob", "builder"))
    assert response.status_code == 504 and response.json()["error"] == "RequestTimeout"
    jobs = client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant="a1111-bob"))  # type: ignore[union-attr]
    assert [(j.labels["api"], j.state) for j in jobs] == [("a1111", JobState.CANCELED)]


def test_basic_credentials_without_configured_users(make_client: Any) -> None:
    open_client = make_client()  # open mode: A1111 without --api-auth ignores the header
    assert open_client.get("/sdapi/v1/sd-models", auth=("any", "thing")).status_code == 200
    keyed = make_client(auth="required")
    response = keyed.get("/sdapi/v1/sd-models", auth=("any", "thing"))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/sdapi/v1/sd-models").status_code == 401


# ===================================================================== bad input


def _png_bytes(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return buf.getvalue()


BIG_PNG = base64.b64encode(_png_bytes((5000, 4000))).decode()
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("malformed base64", "img2img", {"init_images": ["!!!not base64"]}, 422, "Invalid encoded image"),
    ("base64, not an image", "img2img", {"init_images": ["aGVsbG8gd29ybGQ="]}, 422, "Invalid encoded image"),
    (
        "a PNG header and garbage",
        "img2img",
        {"init_images": [base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()]},
        422,
        "Invalid encoded image",
    ),
    (
        "malformed mask",
        "img2img",
        {"init_images": [png_b64()], "mask": "data:image/png;base64,@@"},
        422,
        "mask",
    ),
    (
        "an image URL",
        "img2img",
        {"init_images": ["http://169.254.169.254/x.png"]},
        422,
        "URLs are not fetched",
    ),
    ("no init image", "img2img", {}, 404, "Init image not found"),
    ("too many init images", "img2img", {"init_images": [png_b64()] * 3, "batch_size": 2}, 422, "bad number"),
    ("oversize image (pixels)", "img2img", {"init_images": [BIG_PNG]}, 422, "5000×4000 pixels"),
    ("width not a multiple of 8", "txt2img", {"width": 500}, 422, "multiples of 8"),
    ("10,000 steps", "txt2img", {"steps": 10000}, 422, "steps is 10000, the limit is 150"),
    ("a huge output", "txt2img", {"width": 4096, "height": 4096}, 422, "the limit is 2048"),
    (
        "hires beyond the limits",
        "txt2img",
        {"enable_hr": True, "hr_scale": 4, "width": 1024},
        422,
        "the limit",
    ),
    ("too many images", "txt2img", {"batch_size": 8, "n_iter": 16}, 422, "batch_size × n_iter"),
    (
        "an unknown hires upscaler",
        "txt2img",
        {"enable_hr": True, "hr_upscaler": "4x-Ultra"},
        422,
        "upscaler named",
    ),
    (
        "an unknown script",
        "txt2img",
        {"alwayson_scripts": {"ADetailer": {"args": []}}},
        422,
        "Script 'ADetailer' not found",
    ),
    (
        "a selectable script this server does not run",
        "img2img",
        {"script_name": "img2img alternative test", "init_images": [png_b64()]},
        422,
        "Script 'img2img alternative test' not found",
    ),
    (
        "an img2img script on txt2img",
        "txt2img",
        {"script_name": "loopback"},
        422,
        "Script 'loopback' not found",
    ),
    (
        "an unknown refiner",
        "txt2img",
        {"refiner_checkpoint": "sdxl-refiner"},
        422,
        "Could not find checkpoint",
    ),
    (
        "an unregistered LoRA",
        "txt2img",
        {"prompt": "a cat <lora:nowhere:0.8>"},
        422,
        "no lora named 'nowhere'",
    ),
    (
        "a prompt per image",
        "txt2img",
        {"prompt": ["a cat", "a dog"], "batch_size": 2},
        422,
        "one request per prompt",
    ),
    ("a seed out of range", "txt2img", {"seed": 2**40}, 422, "seed"),
    ("cfg out of range", "txt2img", {"cfg_scale": 1000}, 422, "cfg_scale"),
    ("a NUL in the prompt", "txt2img", {"prompt": "a\x00b"}, 422, "NUL"),
]


@pytest.mark.parametrize(
    ("kind", "body", "status", "detail"),
    [pytest.param(k, b, s, d, id=name) for name, k, b, s, d in BAD_REQUESTS],
)
def test_bad_input_is_an_a1111_error_and_stores_no_job(
    shared_client: TestClient, kind: str, body: dict[str, Any], status: int, detail: str
) -> None:
    client = shared_client
    response = client.post(f"/sdapi/v1/{kind}", json={"prompt": "x", **body})
    assert response.status_code == status, response.text
    envelope = response.json()
    assert set(envelope) == {"error", "detail", "body", "errors"}
    assert detail in envelope["detail"]
    jobs = client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant=None))  # type: ignore[union-attr]
    assert jobs == []


def test_an_image_over_the_upload_limit_and_a_body_over_the_body_limit(make_client: Any) -> None:
    client = make_client(limits={"max_upload_bytes": 1000, "max_body_bytes": 200_000})
    noisy = io.BytesIO()
    Image.frombytes("L", (64, 64), os.urandom(64 * 64)).save(noisy, format="PNG")
    image = base64.b64encode(noisy.getvalue()).decode()
    response = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [image]})
    assert response.status_code == 422 and response.json()["error"] == "LimitExceeded"
    too_big = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": ["A" * 300_000]})
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "PayloadTooLarge"


def test_fields_a1111_does_not_know_are_ignored_and_wrong_types_get_fastapis_422(
    shared_client: TestClient,
) -> None:
    client = shared_client
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": "many"})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "steps"]
    # unknown fields pass validation (the request then waits for a worker; here it is refused by limits)
    ignored = client.post(
        "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 10000, "no_such_field": {"a": 1}}
    )
    assert ignored.status_code == 422 and "steps is 10000" in ignored.json()["detail"]


def test_png_info_of_images_without_infotext_and_of_jpeg_exif(shared_client: TestClient) -> None:
    client = shared_client
    plain = client.post("/sdapi/v1/png-info", json={"image": png_b64()}).json()
    assert plain["info"] == "" and plain["parameters"]["Prompt"] == ""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + "a fox\nSteps: 3, Sampler: Euler, Seed: 5".encode(
        "utf-16-be"
    )
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="JPEG", exif=exif.tobytes())
    jpeg = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()}).json()
    assert jpeg["info"] == "a fox\nSteps: 3, Sampler: Euler, Seed: 5"
    assert jpeg["parameters"]["Seed"] == "5"
    bad = client.post("/sdapi/v1/png-info", json={"image": "nonsense"})
    assert bad.status_code == 422 and "Invalid encoded image" in bad.json()["detail"]
