"""A1111's Extras API on the queue: ``extra-single-image`` and ``extra-batch-images`` run as ``upscale`` jobs on
workers, with A1111's size rules; bad input is a 422 naming the field before anything is stored; a real
client (``webuiapi``) works unchanged. Resizes only here (no net files): the nets are tested in
``tests/engine/upscale`` and end to end in ``test_a1111_extras_nets.py``."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from sdfleet.engine.fake import FakeEngine
from tests.integration.a1111.conftest import BASIC_PASSWORD, decode_png
from tests.support.live import Orchestrator, WorkerPool


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 40, 90)) -> str:
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 4):  # some detail, so a resize is not a no-op
        image.putpixel((x, x % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _single(api: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await api.post("/sdapi/v1/extra-single-image", json=body)


async def test_scale_by_and_scale_to_follow_a1111s_size_rules(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    image = _png((64, 48))
    # scale by 2: 128×96
    r = await _single(api, image=image, upscaler_1="Lanczos", upscaling_resize=2)
    assert r.status_code == 200, r.text
    assert decode_png(r.json()["image"]).size == (128, 96)
    assert "Postprocess upscale by: 2" in r.json()["html_info"]
    # scale by 1.7: each side × 1.7, floored to a multiple of 8 (108.8 → 104, 81.6 → 80)
    r = await _single(api, image=image, upscaler_1="Nearest", upscaling_resize=1.7)
    assert decode_png(r.json()["image"]).size == (104, 80)
    # scale to 100×60 with crop: exactly the box
    r = await _single(
        api, image=image, upscaler_1="Lanczos", resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=60
    )
    assert decode_png(r.json()["image"]).size == (100, 60)
    # without crop: the factor that covers the box (max(100/64, 60/48) = 1.5625), floored to ÷8 → 96×72
    r = await _single(
        api,
        image=image,
        upscaler_1="Lanczos",
        resize_mode=1,
        upscaling_resize_w=100,
        upscaling_resize_h=60,
        upscaling_crop=False,
    )
    assert decode_png(r.json()["image"]).size == (96, 72)
    # upscaler 1 "None": A1111 leaves the size alone
    r = await _single(api, image=image, upscaler_1="None", upscaling_resize=3)
    assert decode_png(r.json()["image"]).size == (64, 48)
    # two upscalers blended: the result is between the two
    lanczos = decode_png(
        (await _single(api, image=image, upscaler_1="Lanczos", upscaling_resize=2)).json()["image"]
    )
    nearest = decode_png(
        (await _single(api, image=image, upscaler_1="Nearest", upscaling_resize=2)).json()["image"]
    )
    r = await _single(
        api,
        image=image,
        upscaler_1="Lanczos",
        upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.5,
        upscaling_resize=2,
    )
    blended = decode_png(r.json()["image"])
    assert blended.size == (128, 96)
    assert (
        blended.convert("RGB").tobytes()
        == Image.blend(lanczos.convert("RGB"), nearest.convert("RGB"), 0.5).tobytes()
    )
    assert "Postprocess upscaler 2: Nearest" in r.json()["html_info"]


async def test_a_batch_is_one_job_per_image_and_keeps_the_order(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool
) -> None:
    for _ in range(2):
        await workers.start(FakeEngine(step_seconds=0.0))
    sizes = [(64, 64), (40, 24), (16, 80)]
    r = await api.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": _png(s), "name": f"p{i}.png"} for i, s in enumerate(sizes)],
            "upscaler_1": "Lanczos",
            "upscaling_resize": 2,
        },
    )
    assert r.status_code == 200, r.text
    assert [decode_png(i).size for i in r.json()["images"]] == [(128, 128), (80, 48), (32, 160)]
    assert r.json()["html_info"].count("<p>") == 3 and "p1.png" in r.json()["html_info"]
    # one upscale_batch parent, its three upscale children spread over the workers, outputs in order
    [parent] = (await admin.get("/v1/jobs", params={"kind": "upscale_batch", "limit": 10})).json()["jobs"]
    assert parent["state"] == "succeeded" and len(parent["outputs"]) == 3, parent
    children = (await admin.get("/v1/jobs", params={"parent": parent["id"]})).json()["jobs"]
    assert sorted(c["kind"] for c in children) == ["upscale"] * 3
    assert all(c["state"] == "succeeded" and c["parent_id"] == parent["id"] for c in children)
    plain = (await admin.get("/v1/jobs", params={"kind": "upscale", "limit": 10})).json()["jobs"]
    assert not [j for j in plain if j["parent_id"]]  # children stay out of the plain list


async def test_face_restoration_without_a_restorer_succeeds_and_says_so(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    r = await _single(api, image=_png((32, 32)), upscaler_1="Lanczos", gfpgan_visibility=1.0)
    assert r.status_code == 200, r.text
    assert decode_png(r.json()["image"]).size == (64, 64)
    assert "no GFPGAN or CodeFormer face restorer is registered" in r.json()["html_info"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1", "no upscaler named 'R-ESRGAN 4x+'"),
        (
            {"upscaler_1": "Lanczos", "upscaler_2": "nope", "extras_upscaler_2_visibility": 0.3},
            "upscaler_2",
            "nope",
        ),
        ({"image": "not base64!"}, "image", "Invalid encoded image"),
        (
            {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()},
            "image",
            "Invalid encoded image",
        ),
        ({"image": ""}, "image", "empty"),
        ({"upscaling_resize": 9}, "upscaling_resize", ""),
        ({"upscaling_resize": 8, "image": _png((1100, 1100))}, "upscaling_resize", "limit"),
        ({"gfpgan_visibility": 2}, "gfpgan_visibility", ""),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str, words: str
) -> None:
    r = await _single(api, **{"image": _png((16, 16)), "upscaler_1": "Lanczos", **body})
    assert r.status_code == 422, r.text
    assert field in r.text and words in r.text


async def test_batch_errors_name_the_image(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": _png((8, 8)), "name": "a"}, {"data": "@@", "name": "b"}],
            "upscaler_1": "Lanczos",
        },
    )
    assert r.status_code == 422 and "imageList.1.data" in r.text
    r = await api.post("/sdapi/v1/extra-batch-images", json={"imageList": [], "upscaler_1": "Lanczos"})
    assert r.status_code == 422 and "imageList" in r.text


async def test_upscalers_lists_the_registered_nets(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "x4.safetensors"
    path.write_bytes(b"weights")
    body = {
        "name": "R-ESRGAN 4x+ test",
        "kind": "upscaler",
        "arch": "esrgan",
        "scale": 4,
        "source": str(path),
    }
    assert (await admin.post("/v1/models", json=body)).status_code == 201, body
    listed = {u["name"]: u for u in (await api.get("/sdapi/v1/upscalers")).json()}
    assert {"None", "Lanczos", "Nearest"} <= set(listed)
    assert listed["R-ESRGAN 4x+ test"]["scale"] == 4.0
    # an upscaler may not take a built-in resize's name, and only upscalers have a scale
    clash = {**body, "name": "Lanczos"}
    assert (await admin.post("/v1/models", json=clash)).status_code == 422
    wrong = {**body, "name": "ckpt", "kind": "checkpoint", "arch": "sd1"}
    assert (await admin.post("/v1/models", json=wrong)).status_code == 422


async def test_webuiapi_extras_work_unchanged(
    orchestrator: Orchestrator, basic_user: str, workers: WorkerPool
) -> None:
    webuiapi = pytest.importorskip("webuiapi")
    await workers.start(FakeEngine(step_seconds=0.0))

    def run() -> tuple[Any, Any]:
        client = webuiapi.WebUIApi(
            host="127.0.0.1", port=orchestrator.settings.port, username=basic_user, password=BASIC_PASSWORD
        )
        one = client.extra_single_image(
            image=Image.new("RGB", (40, 32), (10, 200, 30)), upscaler_1="Lanczos", upscaling_resize=2
        )
        many = client.extra_batch_images(
            images=[Image.new("RGB", (24, 24), (1, 2, 3)), Image.new("RGB", (16, 8), (9, 9, 9))],
            upscaler_1=webuiapi.Upscaler.Nearest,
            upscaling_resize=3,
        )
        return one, many

    one, many = await asyncio.to_thread(run)
    assert one.image.size == (80, 64)
    assert [i.size for i in many.images] == [(72, 72), (48, 24)]
