"""A1111's Extras through real upscaler nets (the tiny ESRGAN and Compact files): a Compact net runs on a
CPU-only worker, an ESRGAN waits for a worker that takes GPU-class work, and the results have the net's
sizes; ``webuiapi`` names a registered upscaler as A1111 clients do."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdfleet.engine.fake import FakeEngine
from sdfleet.testing.tiny_models import TinyModels
from tests.integration.a1111.conftest import BASIC_PASSWORD, decode_png
from tests.support.live import Orchestrator, WorkerPool, wait_until

pytest.importorskip("torch", reason="the upscaler nets need torch (the [engine] extra)")


def _png(size: tuple[int, int]) -> str:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 7 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _register(admin: httpx.AsyncClient, tiny_models: TinyModels) -> None:
    for name, arch, path in (
        ("R-ESRGAN General 4xV3", "srvgg", tiny_models.srvgg_file),
        ("4x-UltraSharp", "esrgan", tiny_models.rrdb_file),
    ):
        body = {"name": name, "kind": "upscaler", "arch": arch, "scale": 4, "source": str(path)}
        r = await admin.post("/v1/models", json=body)
        assert r.status_code in (200, 201), r.text


async def test_compact_runs_on_cpu_workers_and_esrgan_waits_for_gpu_class_work(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool, tiny_models: TinyModels
) -> None:
    await _register(admin, tiny_models)
    await workers.start(FakeEngine(step_seconds=0.0), gpu_work_on_cpu=False)
    image = _png((40, 24))
    r = await api.post(
        "/sdapi/v1/extra-single-image",
        json={"image": image, "upscaler_1": "R-ESRGAN General 4xV3", "upscaling_resize": 4},
    )
    assert r.status_code == 200, r.text
    out = decode_png(r.json()["image"])
    assert out.size == (160, 96) and np.asarray(out).std() > 5
    assert "Postprocess upscaler: R-ESRGAN General 4xV3" in r.json()["html_info"]

    heavy = asyncio.create_task(
        api.post(
            "/sdapi/v1/extra-single-image",
            json={"image": image, "upscaler_1": "4x-UltraSharp", "upscaling_resize": 2},
        )
    )

    async def queued_upscale() -> bool:
        jobs = (await admin.get("/v1/jobs", params={"status": "queued"})).json()["jobs"]
        return any(j["kind"] == "upscale" for j in jobs)

    await wait_until(queued_upscale, what="the ESRGAN job to be queued")
    await asyncio.sleep(1.5)  # the CPU-only worker polls and leaves it
    assert not heavy.done() and await queued_upscale()
    await workers.start(FakeEngine(step_seconds=0.0), gpu_work_on_cpu=True)
    r = await asyncio.wait_for(heavy, timeout=60)
    assert r.status_code == 200, r.text
    assert decode_png(r.json()["image"]).size == (80, 48)


async def test_webuiapi_names_a_registered_upscaler(
    orchestrator: Orchestrator,
    admin: httpx.AsyncClient,
    basic_user: str,
    workers: WorkerPool,
    tiny_models: TinyModels,
) -> None:
    webuiapi = pytest.importorskip("webuiapi")
    await _register(admin, tiny_models)
    await workers.start(FakeEngine(step_seconds=0.0), gpu_work_on_cpu=True)

    def run() -> Any:
        client = webuiapi.WebUIApi(
            host="127.0.0.1", port=orchestrator.settings.port, username=basic_user, password=BASIC_PASSWORD
        )
        names = [u["name"] for u in client.get_upscalers()]
        one = client.extra_single_image(
            image=Image.new("RGB", (32, 16), (10, 200, 30)),
            upscaler_1="4x-UltraSharp",
            upscaling_resize=4,
            upscaler_2="R-ESRGAN General 4xV3",
            extras_upscaler_2_visibility=0.5,
        )
        return names, one

    names, one = await asyncio.to_thread(run)
    assert {"4x-UltraSharp", "R-ESRGAN General 4xV3"} <= set(names)
    assert one.image.size == (128, 64)
