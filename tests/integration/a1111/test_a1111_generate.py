"""txt2img and img2img through the real queue: a live orchestrator (uvicorn), FakeEngine workers, and the
payloads real A1111 clients send. Checks the answers field by field as A1111 shapes them."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdfleet.engine.fake import FakeEngine
from tests.integration.a1111.conftest import checkpoint_body, decode_png, png_b64, title_of
from tests.support.live import Orchestrator, WorkerPool, wait_until

INFO_KEYS = {
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "restore_faces",
    "face_restoration_model",
    "sd_model_name",
    "sd_model_hash",
    "sd_vae_name",
    "sd_vae_hash",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
    "is_using_inpainting_conditioning",
    "version",
}

# What mix1009/sdwebuiapi's WebUIApi.txt2img() sends (every field, with its defaults).
SDWEBUIAPI_TXT2IMG: dict[str, Any] = {
    "enable_hr": False,
    "denoising_strength": 0.7,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "prompt": "a lighthouse at dusk, oil painting",
    "styles": [],
    "seed": 1234,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": 0,
    "seed_resize_from_w": 0,
    "sampler_name": "Euler a",
    "batch_size": 2,
    "n_iter": 2,
    "steps": 4,
    "cfg_scale": 7.0,
    "width": 128,
    "height": 96,
    "restore_faces": False,
    "tiling": False,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "negative_prompt": "blurry",
    "eta": 1.0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "script_args": [],
    "script_name": None,
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "sampler_index": "Euler a",
    "use_async": False,  # a client-side flag some versions leak into the body: must be ignored
}


async def txt2img(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def info_of(answer: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(answer["info"], str), "info must be a JSON string, as A1111 sends it"
    info: dict[str, Any] = json.loads(answer["info"])
    return info


async def test_sdwebuiapi_txt2img_payload_answers_like_a1111(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start()
    response = await api.post("/sdapi/v1/txt2img", json=SDWEBUIAPI_TXT2IMG)
    assert response.status_code == 200, response.text
    assert float(response.headers["x-process-time"]) > 0
    answer = response.json()
    assert set(answer) == {"images", "parameters", "info"}

    # images: raw base64 PNGs (no data: prefix), batch_size × n_iter of them, each with its infotext
    assert len(answer["images"]) == 4
    info = info_of(answer)
    assert set(info) >= INFO_KEYS
    assert info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert info["seed"] == 1234
    assert len(info["all_subseeds"]) == 4 and info["all_subseeds"] == list(
        range(info["subseed"], info["subseed"] + 4)
    )
    assert info["all_prompts"] == ["a lighthouse at dusk, oil painting"] * 4
    assert info["all_negative_prompts"] == ["blurry"] * 4
    assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (128, 96, 4, 7.0)
    assert info["sampler_name"] == "Euler a"
    assert info["batch_size"] == 2
    assert info["index_of_first_image"] == 0
    assert info["restore_faces"] is False
    assert info["clip_skip"] == 1
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])
    assert info["sdfleet"]["notes"] == []
    assert info["sdfleet"]["task_id"].startswith("task(txt2img-")
    for index, (data, infotext) in enumerate(zip(answer["images"], info["infotexts"], strict=True)):
        assert not data.startswith("data:")
        image = decode_png(data)
        assert image.format == "PNG" and image.size == (128, 96)
        assert image.info["parameters"] == infotext
        assert infotext.startswith("a lighthouse at dusk, oil painting\nNegative prompt: blurry\n")
        assert f"Seed: {1234 + index}," in infotext
        assert "Sampler: Euler a" in infotext

    # parameters: the request echoed with A1111's fields (and none of the unknown ones)
    params = answer["parameters"]
    assert params["prompt"] == SDWEBUIAPI_TXT2IMG["prompt"]
    assert params["steps"] == 4 and params["sampler_index"] == "Euler a"
    assert "use_async" not in params


async def test_png_info_parses_what_we_write(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    await workers.start()
    answer = await txt2img(
        api,
        prompt="a (red:1.2) fox, snow",
        negative_prompt="lowres",
        steps=3,
        seed=77,
        width=64,
        height=64,
        cfg_scale=6.5,
    )
    [image] = answer["images"]
    for sent in (image, "data:image/png;base64," + image):
        response = await api.post("/sdapi/v1/png-info", json={"image": sent})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["info"] == info_of(answer)["infotexts"][0]
        parsed = body["parameters"]
        assert parsed["Prompt"] == "a (red:1.2) fox, snow"
        assert parsed["Negative prompt"] == "lowres"
        assert (parsed["Steps"], parsed["Seed"], parsed["CFG scale"]) == ("3", "77", "6.5")
        assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")
        assert parsed["Clip skip"] == "1"  # A1111's defaults are added
        assert "parameters" not in body["items"]


async def test_defaults_are_a1111_api_defaults(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    """The A1111 wiki's minimal example: only a prompt. Steps 50, cfg 7, 512×512, Euler (sampler_index)."""
    await workers.start(FakeEngine(step_seconds=0.0))
    answer = await txt2img(api, prompt="maltese puppy")
    info = info_of(answer)
    assert (info["steps"], info["cfg_scale"], info["width"], info["height"]) == (50, 7.0, 512, 512)
    assert info["sampler_name"] == "Euler"
    assert 0 <= info["seed"] < 4294967294
    assert decode_png(answer["images"][0]).size == (512, 512)
    assert answer["parameters"]["sampler_index"] == "Euler"
    assert answer["parameters"]["steps"] == 50


async def test_samplers_resolve_as_a1111_does_and_unknown_ones_fall_back_with_a_note(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    legacy = info_of(
        await txt2img(api, prompt="x", steps=2, width=64, height=64, sampler_name="DPM++ 2M Karras")
    )
    assert legacy["sampler_name"] == "DPM++ 2M"
    assert legacy["sdfleet"]["notes"] == []
    explicit = await txt2img(
        api, prompt="x", steps=2, width=64, height=64, sampler_name="Euler", scheduler="karras"
    )
    assert "Schedule type: Karras" in info_of(explicit)["infotexts"][0]

    unknown = info_of(await txt2img(api, prompt="x", steps=2, width=64, height=64, sampler_name="k_euler_a"))
    assert unknown["sampler_name"] == "DPM++ 2M"  # A1111's fallback: the first sampler
    [note] = unknown["sdfleet"]["notes"]
    assert "'k_euler_a' not found" in note and "Euler a" in note


async def test_override_settings_are_per_request_and_options_per_tenant(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool, tmp_path: Path
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    for name in ("alpha", "beta"):
        assert (await admin.post("/v1/models", json=checkpoint_body(tmp_path, name))).status_code == 201

    # a tenant default, as Open WebUI sets it: POST /options, then plain txt2img calls
    assert (await api.post("/sdapi/v1/options", json={"sd_model_checkpoint": "alpha"})).json() is None
    options = (await api.get("/sdapi/v1/options")).json()
    assert options["sd_model_checkpoint"] == title_of("alpha")
    first = info_of(await txt2img(api, prompt="x", steps=1, width=64, height=64))
    assert first["sd_model_name"] == "alpha"
    assert first["sd_model_hash"] == title_of("alpha")[-11:-1]

    # one request overrides it by A1111 title, with clip skip; the next one is back on the default
    override = {"sd_model_checkpoint": title_of("beta"), "CLIP_stop_at_last_layers": 2}
    second = info_of(await txt2img(api, prompt="x", steps=1, width=64, height=64, override_settings=override))
    assert second["sd_model_name"] == "beta"
    assert second["clip_skip"] == 2
    assert "Model: beta" in second["infotexts"][0] and "Clip skip: 2" in second["infotexts"][0]
    third = info_of(await txt2img(api, prompt="x", steps=1, width=64, height=64))
    assert (third["sd_model_name"], third["clip_skip"]) == ("alpha", 1)

    # an unknown checkpoint override is dropped, as A1111 drops it — and said so
    fourth = info_of(
        await txt2img(
            api,
            prompt="x",
            steps=1,
            width=64,
            height=64,
            override_settings={"sd_model_checkpoint": "gamma.safetensors"},
        )
    )
    assert fourth["sd_model_name"] == "alpha"
    assert "'gamma.safetensors' not found" in fourth["sdfleet"]["notes"][0]

    # override_settings_restore_afterwards=false keeps the override as the tenant's setting
    await txt2img(
        api,
        prompt="x",
        steps=1,
        width=64,
        height=64,
        override_settings={"sd_model_checkpoint": "beta"},
        override_settings_restore_afterwards=False,
    )
    assert (await api.get("/sdapi/v1/options")).json()["sd_model_checkpoint"] == title_of("beta")


async def test_infotext_fills_the_fields_the_client_did_not_set(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    pasted = (
        "a castle on a hill\nNegative prompt: fog\n"
        "Steps: 3, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 4242, Size: 64x96, Clip skip: 2"
    )
    answer = await txt2img(api, infotext=pasted, steps=2)
    info = info_of(answer)
    assert info["prompt"] == "a castle on a hill" and info["negative_prompt"] == "fog"
    assert info["steps"] == 2  # set by the client: the infotext does not win
    assert (info["seed"], info["cfg_scale"], info["width"], info["height"]) == (4242, 5.5, 64, 96)
    assert info["sampler_name"] == "DPM++ 2M"
    assert info["clip_skip"] == 2  # "Clip skip" became an override setting
    assert answer["parameters"]["override_settings"] == {"CLIP_stop_at_last_layers": 2}


async def test_hires_fix_and_variation_seeds(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    answer = await txt2img(
        api,
        prompt="x",
        steps=2,
        width=64,
        height=64,
        enable_hr=True,
        hr_scale=2,
        hr_upscaler="Latent",
        denoising_strength=0.5,
        seed=10,
        subseed=20,
        subseed_strength=0.3,
        batch_size=2,
    )
    info = info_of(answer)
    assert [decode_png(i).size for i in answer["images"]] == [(128, 128)] * 2
    assert info["width"] == 64 and info["denoising_strength"] == 0.5
    assert info["all_subseeds"] == [20, 21]
    assert "Hires upscale: 2" in info["infotexts"][0]


async def test_send_images_false_answers_without_images(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    answer = await txt2img(api, prompt="x", steps=1, width=64, height=64, seed=5, send_images=False)
    assert answer["images"] == []
    info = info_of(answer)
    assert info["all_seeds"] == [5] and len(info["infotexts"]) == 1


async def test_img2img_with_and_without_data_prefix_and_inpainting(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    red = png_b64((220, 20, 20))
    for init in (red, "data:image/png;base64," + red):
        response = await api.post(
            "/sdapi/v1/img2img",
            json={
                "init_images": [init],
                "prompt": "x",
                "steps": 2,
                "width": 64,
                "height": 64,
                "denoising_strength": 0.0,
                "seed": 3,
            },
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        image = decode_png(answer["images"][0]).convert("RGB")
        assert image.getpixel((32, 32)) == (220, 20, 20)  # strength 0 keeps the input
        assert answer["parameters"]["init_images"] is None  # include_init_images is false
        assert info_of(answer)["denoising_strength"] == 0.0

    # inpainting: white repaints, black keeps (mask as a data: URL)
    mask = png_b64((0, 0, 0))
    response = await api.post(
        "/sdapi/v1/img2img",
        json={
            "init_images": [red],
            "mask": "data:image/png;base64," + mask,
            "prompt": "x",
            "steps": 2,
            "width": 64,
            "height": 64,
            "denoising_strength": 1.0,
            "mask_blur": 0,
        },
    )
    assert response.status_code == 200, response.text
    kept = decode_png(response.json()["images"][0]).convert("RGB")
    assert kept.getpixel((10, 10)) == (220, 20, 20)

    # several init images: one per image of the batch, and the batch shrinks to their number (A1111)
    two = await api.post(
        "/sdapi/v1/img2img",
        json={
            "init_images": [red, png_b64((20, 20, 220))],
            "batch_size": 4,
            "prompt": "x",
            "steps": 1,
            "width": 64,
            "height": 64,
        },
    )
    assert two.status_code == 200, two.text
    assert len(two.json()["images"]) == 2


async def test_progress_interrupt_and_task_ids_belong_to_the_caller(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.05))
    assert (await api.get("/sdapi/v1/progress")).json()["state"]["job_count"] == 0
    call = asyncio.create_task(
        api.post(
            "/sdapi/v1/txt2img",
            json={
                "prompt": "x",
                "steps": 100,
                "width": 64,
                "height": 64,
                "n_iter": 2,
                "force_task_id": "task(my-id)",
            },
        )
    )
    progress: dict[str, Any] = {}

    async def running() -> bool:
        nonlocal progress
        progress = (await api.get("/sdapi/v1/progress")).json()
        return progress["progress"] > 0.01

    await wait_until(running, what="progress")
    assert progress["current_task"] == "task(my-id)"
    assert progress["state"]["job_count"] == 2 and progress["state"]["sampling_steps"] == 100
    assert progress["state"]["job"] == "scripts_txt2img"
    assert progress["eta_relative"] > 0
    assert progress["current_image"] is None  # no live previews: not faked
    task = (
        await api.post("/internal/progress", json={"id_task": "task(my-id)", "id_live_preview": -1})
    ).json()
    assert task["active"] is True and task["queued"] is False and 0 < task["progress"] < 1
    other = (await api.post("/internal/progress", json={"id_task": "task(not-mine)"})).json()
    assert (other["active"], other["queued"], other["completed"]) == (False, False, False)

    assert (await api.post("/sdapi/v1/interrupt")).json() == {}
    response = await call
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["images"] == []
    assert info_of(answer)["sdfleet"]["interrupted"] is True
    done = (await api.post("/internal/progress", json={"id_task": "task(my-id)"})).json()
    assert done["completed"] is True
    idle = (await api.get("/sdapi/v1/progress")).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


async def test_a_client_that_goes_away_cancels_its_job(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, orchestrator: Orchestrator
) -> None:
    """No worker: the job stays queued; the client gives up (closes the connection) and the job is canceled."""
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=0.5, auth=api.auth) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(
                "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "force_task_id": "gone"}
            )

    async def canceled() -> bool:
        jobs = (await admin.get("/v1/jobs", params={"label": "task_id:gone"})).json()["jobs"]
        return bool(jobs) and jobs[0]["state"] == "canceled"

    await wait_until(canceled, timeout=5, what="the abandoned job to be canceled")


async def test_bad_requests_are_refused_at_the_edge_and_the_worker_keeps_working(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    worker = await workers.start(FakeEngine(step_seconds=0.0))
    bad = [
        ("img2img", {"init_images": ["%%% not base64 %%%"]}, 422),
        (
            "img2img",
            {"init_images": ["data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nxx").decode()]},
            422,
        ),
        ("txt2img", {"width": 100}, 422),
        ("txt2img", {"steps": 10000}, 422),
        ("txt2img", {"width": 8192, "height": 8192}, 422),
        ("txt2img", {"alwayson_scripts": {"ADetailer": {"args": [True]}}}, 422),
        ("img2img", {}, 404),
    ]
    for kind, body, status in bad:
        response = await api.post(f"/sdapi/v1/{kind}", json={"prompt": "x", **body})
        assert response.status_code == status, (body, response.text)
        assert set(response.json()) == {"error", "detail", "body", "errors"}
    good = await txt2img(api, prompt="x", steps=1, width=64, height=64, sampler_name="Nonexistent Sampler")
    assert info_of(good)["sampler_name"] == "DPM++ 2M"
    assert worker.stats.jobs_claimed == worker.stats.jobs_completed == 1  # the bad ones never reached it
    assert worker.stats.jobs_failed == 0


async def test_a_failing_engine_is_an_a1111_error_and_the_worker_survives(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    worker = await workers.start(FakeEngine(step_seconds=0.0, fail_every=2, fail_with="fatal"))
    assert (
        await api.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    ).status_code == 200
    failed = await api.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    assert failed.status_code == 500
    assert failed.json()["error"] == "EngineError" and "injected fatal failure" in failed.json()["detail"]
    again = await api.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    assert again.status_code == 200
    assert worker.stats.jobs_completed == 2
