"""A real A1111 client library, unchanged, against sdfleet: mix1009/sdwebuiapi (``pip install webuiapi``),
the most used Python client of the A1111 API. It runs in a thread (it is synchronous, on requests) while the
workers run in the test's event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from sdfleet.engine.fake import FakeEngine
from tests.integration.a1111.conftest import BASIC_PASSWORD, checkpoint_body, title_of
from tests.support.live import Orchestrator, WorkerPool

webuiapi = pytest.importorskip("webuiapi")


def _client(orchestrator: Orchestrator, user: str) -> Any:
    return webuiapi.WebUIApi(
        host="127.0.0.1", port=orchestrator.settings.port, username=user, password=BASIC_PASSWORD
    )


async def test_sdwebuiapi_txt2img_img2img_png_info_and_models(
    orchestrator: Orchestrator, basic_user: str, admin: httpx.AsyncClient, workers: WorkerPool, tmp_path: Path
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    for name in ("dreamshaper", "realistic-vision"):
        assert (await admin.post("/v1/models", json=checkpoint_body(tmp_path, name))).status_code == 201
    client = await asyncio.to_thread(_client, orchestrator, basic_user)

    # the model switch as the library does it: closest title, then POST /options (for this tenant only)
    await asyncio.to_thread(client.util_set_model, "Realistic-Vision")
    assert await asyncio.to_thread(client.util_get_current_model) == title_of("realistic-vision")

    result = await asyncio.to_thread(
        client.txt2img,
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        seed=1234,
        steps=3,
        width=96,
        height=64,
        batch_size=2,
        cfg_scale=7,
    )
    assert [image.size for image in result.images] == [(96, 64)] * 2
    assert result.info["all_seeds"] == [1234, 1235]
    assert result.info["sd_model_name"] == "realistic-vision"
    assert result.info["sampler_name"] == "Euler a"  # the library's default, sent as sampler_name
    assert result.parameters["prompt"] == "a lighthouse at dusk"

    red = Image.new("RGB", (64, 64), (220, 20, 20))
    mask = Image.new("L", (64, 64), 0)
    edited = await asyncio.to_thread(
        client.img2img,
        images=[red],
        mask_image=mask,
        prompt="x",
        steps=2,
        width=64,
        height=64,
        seed=9,
        denoising_strength=1.0,
        mask_blur=0,
    )
    assert edited.images[0].convert("RGB").getpixel((5, 5)) == (220, 20, 20)  # black mask: kept
    assert edited.info["all_seeds"] == [9]

    info = await asyncio.to_thread(client.png_info, result.images[1])
    assert info.parameters["Seed"] == "1235" and info.parameters["Prompt"] == "a lighthouse at dusk"
    assert info.info.startswith("a lighthouse at dusk\nNegative prompt: blurry\n")

    names = await asyncio.to_thread(client.util_get_model_names)
    assert names == sorted([title_of("dreamshaper"), title_of("realistic-vision")])
    assert "DPM++ 2M" in await asyncio.to_thread(client.util_get_sampler_names)
    assert "karras" in await asyncio.to_thread(client.util_get_scheduler_names)
    progress = await asyncio.to_thread(client.get_progress)
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
    await asyncio.to_thread(client.util_wait_for_ready, 0.05)


async def test_sdwebuiapi_runs_selectable_scripts_and_reads_the_settings_table(
    orchestrator: Orchestrator, basic_user: str, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    client = await asyncio.to_thread(_client, orchestrator, basic_user)
    scripts = await asyncio.to_thread(client.get_scripts)
    assert "x/y/z plot" in scripts["txt2img"] and "loopback" in scripts["img2img"]
    options = await asyncio.to_thread(client.get_options)
    assert options["ESRGAN_tile"] == 192 and options["send_seed"] is True
    await asyncio.to_thread(client.set_options, {"ESRGAN_tile": 256})
    assert (await asyncio.to_thread(client.get_options))["ESRGAN_tile"] == 256

    # X/Y/Z plot as the library sends it: script_name + positional script_args
    xyz = [1, "10, 20", [], 4, "2, 3", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    result = await asyncio.to_thread(
        client.txt2img,
        prompt="a kite",
        steps=2,
        width=64,
        height=64,
        script_name="X/Y/Z plot",
        script_args=xyz,
    )
    assert len(result.images) == 5 and result.images[0].width > 128  # the grid first, then the 4 cells
    assert [image.size for image in result.images[1:]] == [(64, 64)] * 4
    assert result.info["index_of_first_image"] == 1
    assert sorted(set(result.info["all_seeds"])) == [10, 20]
