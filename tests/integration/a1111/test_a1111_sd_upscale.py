"""A1111's SD upscale script (``script_name: "SD upscale"`` on img2img) as one fan-out parent job: the
picture upscaled, its tiles redrawn on several workers, one seamless picture back in A1111's answer;
A1111's argument forms (the upscaler by index or name) and a 422 naming the argument."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from sdfleet.engine.fake import FakeEngine
from tests.integration.a1111.conftest import decode_png
from tests.support.live import WorkerPool

pytest.importorskip("torch", reason="workers run the upscale stage with torch installed")


def _png(width: int, height: int) -> str:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    for x in range(0, width, 3):
        image.putpixel((x, (x * 7) % height), (250, 250, 250))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _body(*script_args: Any) -> dict[str, Any]:
    return {
        "init_images": [_png(64, 48)],
        "prompt": "a castle",
        "steps": 3,
        "width": 64,
        "height": 64,
        "denoising_strength": 0.4,
        "seed": 11,
        "script_name": "SD upscale",
        "script_args": list(script_args),
    }


async def test_sd_upscale_runs_as_one_parent_over_several_workers(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool
) -> None:
    pool = [await workers.start(FakeEngine(step_seconds=0.05)) for _ in range(3)]
    # A1111's form: [info, overlap, upscaler index (1 = Lanczos in /sdapi/v1/upscalers), scale factor]
    r = await api.post("/sdapi/v1/img2img", json=_body(None, 16, 1, 2.0))
    assert r.status_code == 200, r.text
    [image] = r.json()["images"]
    picture = decode_png(image)
    assert picture.size == (128, 96)
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in picture.info["parameters"]
    info = json.loads(r.json()["info"])
    parent = (await admin.get(f"/v1/jobs/{info['sdfleet']['job_id']}")).json()
    assert parent["kind"] == "sd_upscale" and parent["state"] == "succeeded"
    children = (await admin.get("/v1/jobs", params={"parent": parent["id"]})).json()["jobs"]
    assert sorted(c["kind"] for c in children) == ["img2img"] * 6 + ["upscale"]
    assert sum(w.stats.jobs_completed > 0 for w in pool) >= 2
    assert info["infotexts"][0].endswith("SD upscale upscaler: Lanczos")
    # by name too (any case), the other arguments at A1111's defaults
    r = await api.post("/sdapi/v1/img2img", json=_body("", 64, "nearest"))
    assert r.status_code == 200, r.text
    assert decode_png(r.json()["images"][0]).size == (128, 96)


async def test_sd_upscale_arguments_are_checked_naming_them(api: httpx.AsyncClient) -> None:
    r = await api.post("/sdapi/v1/img2img", json=_body(None, 16, 99, 2.0))
    assert r.status_code == 422 and "script_args.2" in r.text
    r = await api.post("/sdapi/v1/img2img", json=_body(None, 16, "R-ESRGAN 9x", 2.0))
    assert r.status_code == 422 and "script_args.2" in r.text
    r = await api.post("/sdapi/v1/img2img", json=_body(None, 16, 1, 9.0))
    assert r.status_code == 422 and "script_args.3" in r.text
    r = await api.post("/sdapi/v1/txt2img", json={"prompt": "x", "script_name": "SD upscale"})
    assert r.status_code == 422 and "Script 'SD upscale' not found" in r.text  # img2img only, as in A1111
    listed = (await api.get("/sdapi/v1/scripts")).json()
    assert "sd upscale" in listed["img2img"] and "sd upscale" not in listed["txt2img"]
