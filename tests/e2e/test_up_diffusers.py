"""`sdfleet up` with the real diffusers engine (no --engine flag) on a tiny single-file checkpoint:
the checkpoint is registered under its name, jobs naming it run through the real engine, and every
PNG carries A1111 infotext that parses back to the request."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from sdfleet.a1111 import parse_infotext
from sdfleet.demo.checks import read_picture
from sdfleet.demo.model import demo_available
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.engine]


@contextlib.contextmanager
def sdfleet_up(data: Path, *extra: str) -> Iterator[httpx.Client]:
    """A real ``sdfleet up`` with one worker; a client on it; SIGINT at the end must exit 0."""
    port = free_port()
    env = {**os.environ, "SDFLEET_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "sdfleet", "up", "--port", str(port), "--data-dir", str(data)]
    up = subprocess.Popen(
        [*argv, *extra, "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: (data / "run" / "processes.json").exists(), 120, "sdfleet up")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0, (up.stderr.read() if up.stderr else b"").decode()[-3000:]


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    done: dict[str, Any] = wait_until(
        lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("succeeded", "failed") and j,
        180,
        "the job",
    )
    assert done["state"] == "succeeded", done
    return done


def test_up_serves_a_single_file_checkpoint(tmp_path: Path, tiny_models: Any) -> None:
    with sdfleet_up(tmp_path / "data", "--model", str(tiny_models.sd1_file)) as client:
        [model] = client.get("/v1/models").json()["models"]
        assert model["name"] == "tiny-sd1"
        assert model["arch"] == "sd1"
        params = {
            "prompt": "a red circle",
            "negative_prompt": "blurry",
            "width": 64,
            "height": 64,
            "steps": 3,
            "seed": 1234,
            "batch_size": 2,
            "sampler_name": "Euler a",
            "model": "tiny-sd1",
        }
        job = client.post("/v1/jobs", json={"params": params}).json()
        done = finished(client, job["id"])
        seeds = []
        for out in done["outputs"]:
            image = Image.open(io.BytesIO(client.get(out["url"]).content))
            assert image.size == (64, 64)
            info = parse_infotext(image.info["parameters"])
            assert info["Prompt"] == "a red circle"
            assert info["Negative prompt"] == "blurry"
            assert str(info["Steps"]) == "3"
            assert info["Sampler"] == "Euler a"
            assert info["Model"] == "tiny-sd1"
            assert info["Model hash"] == model["hash"]
            seeds.append(int(info["Seed"]))
        assert seeds == [1234, 1235]


@pytest.mark.skipif(not demo_available(), reason="the demo checkpoint is not in the package")
def test_up_with_no_model_serves_the_demo_model(tmp_path: Path) -> None:
    with sdfleet_up(tmp_path / "data") as client:
        [model] = client.get("/v1/models").json()["models"]
        assert (model["name"], model["arch"]) == ("sdfleet-demo", "sd1")
        params = {
            "prompt": "(red:1.5) circle on a white background",
            "width": 64,
            "height": 64,
            "steps": 16,
            "seed": 100,
            "batch_size": 4,
            "sampler_name": "DPM++ 2M",
        }
        done = finished(client, client.post("/v1/jobs", json={"params": params}).json()["id"])
        images = [Image.open(io.BytesIO(client.get(out["url"]).content)) for out in done["outputs"]]
        assert all(image.size == (64, 64) for image in images)
        assert parse_infotext(images[0].info["parameters"])["Model"] == "sdfleet-demo"
        assert sum(read_picture(image).colour == "red" for image in images) >= 2


def test_up_registers_upscalers_under_a1111s_names(tmp_path: Path, tiny_models: Any) -> None:
    """``sdfleet up --upscaler FILE``: a Real-ESRGAN file answers to A1111's name, the hires fix runs it
    through the real engine, and the Extras endpoint upscales with it on the local (CPU) worker."""
    import base64
    import shutil

    net = tmp_path / "RealESRGAN_x4plus.safetensors"
    shutil.copy(tiny_models.rrdb_file, net)
    with sdfleet_up(
        tmp_path / "data", "--model", str(tiny_models.sd1_file), "--upscaler", str(net)
    ) as client:
        upscalers = {u["name"]: u for u in client.get("/sdapi/v1/upscalers").json()}
        assert upscalers["R-ESRGAN 4x+"]["scale"] == 4
        body = {
            "prompt": "a red circle",
            "steps": 2,
            "width": 32,
            "height": 32,
            "seed": 7,
            "enable_hr": True,
            "hr_scale": 2,
            "hr_upscaler": "R-ESRGAN 4x+",
            "hr_second_pass_steps": 2,
            "denoising_strength": 0.5,
        }
        r = client.post("/sdapi/v1/txt2img", json=body, timeout=180)
        assert r.status_code == 200, r.text
        image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        assert image.size == (64, 64)
        assert parse_infotext(image.info["parameters"])["Hires upscaler"] == "R-ESRGAN 4x+"
        r = client.post(
            "/sdapi/v1/extra-single-image",
            json={"image": r.json()["images"][0], "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 4},
            timeout=180,
        )
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).size == (256, 256)


def test_up_runs_controlnet_units_of_the_native_api(tmp_path: Path, tiny_models: Any) -> None:
    """``sdfleet up --controlnet FILE``: the net is registered with the family read from it; a job with
    ``params.controlnet`` (a control image inline) is fetched, steered and written up in the infotext by the
    local worker; a unit whose net does not fit the checkpoint, or names a preprocessor this server lacks, is a 422 naming the
    unit's field before anything is stored."""
    import base64

    circle = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(circle).ellipse((6, 6, 26, 26), outline="white", width=2)
    buf = io.BytesIO()
    circle.save(buf, format="PNG")
    control = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    with sdfleet_up(
        tmp_path / "data",
        "--model",
        str(tiny_models.sd1_file),
        "--controlnet",
        str(tiny_models.controlnet_sd1_file),
        "--controlnet",
        str(tiny_models.controlnet_sdxl_file),
    ) as client:
        nets = {
            m["name"]: m["arch"]
            for m in client.get("/v1/models", params={"kind": "controlnet"}).json()["models"]
        }
        assert nets == {"tiny-controlnet-sd1": "sd1", "tiny-controlnet-sdxl": "sdxl"}
        params: dict[str, Any] = {
            "prompt": "a circle",
            "width": 32,
            "height": 32,
            "steps": 3,
            "seed": 5,
            "model": "tiny-sd1",
            "controlnet": [{"model": "tiny-controlnet-sd1", "image": control, "weight": 1.5}],
        }
        done = finished(client, client.post("/v1/jobs", json={"params": params}).json()["id"])
        assert done["params"]["controlnet"][0]["image"].startswith("blob:")  # stored once, by reference
        image = Image.open(io.BytesIO(client.get(done["outputs"][0]["url"]).content))
        info = parse_infotext(image.info["parameters"])
        assert info["ControlNet 0"].startswith("Module: none, Model: tiny-controlnet-sd1 [")
        # the unit's detected map follows the picture, marked as such (no seed, no infotext)
        assert [o["detected_map"] for o in done["outputs"]] == [False, True]
        assert done["outputs"][1]["seed"] is None and done["result"]["info"]["detected_maps"] == 1
        shown = Image.open(io.BytesIO(client.get(done["outputs"][1]["url"]).content)).convert("RGB")
        assert shown.tobytes() == circle.tobytes()  # module none: the control image itself
        wrong = {**params, "controlnet": [{"model": "tiny-controlnet-sdxl", "image": control}]}
        r = client.post("/v1/jobs", json={"params": wrong})
        assert r.status_code == 422 and "params.controlnet.0.model" in r.text and "SDXL" in r.text, r.text
        depth = {  # a preprocessor with weights: not served here
            **params,
            "controlnet": [{"model": "tiny-controlnet-sd1", "image": control, "module": "depth"}],
        }
        r = client.post("/v1/jobs", json={"params": depth})
        assert r.status_code == 422 and "params.controlnet.0.module" in r.text, r.text
        assert len(client.get("/v1/jobs").json()["jobs"]) == 1

        # webuiapi, unchanged: its ControlNetUnit arrives as alwayson_scripts.ControlNet, canny inline
        webuiapi = pytest.importorskip("webuiapi")
        port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
        unit = webuiapi.ControlNetUnit(
            image=circle, module="canny", model="tiny-controlnet-sd1 [0123abcd]", weight=1.5, control_mode=2
        )
        # a dict of its own: webuiapi writes the units into its mutable default ``alwayson_scripts={}``, which
        # every later call in this process would then send
        result = api.txt2img(
            prompt="a circle",
            width=32,
            height=32,
            steps=3,
            seed=5,
            controlnet_units=[unit],
            alwayson_scripts={},
        )
        infotext = result.info["infotexts"][0]
        assert len(result.images) == 2 and len(result.info["infotexts"]) == 1  # the picture, then the map
        assert 'ControlNet 0: "Module: canny, Model: tiny-controlnet-sd1 [' in infotext
        assert "Control Mode: ControlNet is more important" in infotext and "Threshold A: 64" in infotext
        assert "controlnet" in client.get("/sdapi/v1/scripts").json()["txt2img"]
        quiet_unit = {**unit.to_dict(), "save_detected_map": False}  # webuiapi does not send the field
        quiet = client.post(
            "/sdapi/v1/txt2img",
            json={
                "prompt": "a circle",
                "width": 32,
                "height": 32,
                "steps": 2,
                "alwayson_scripts": {"controlnet": {"args": [quiet_unit]}},
            },
        )
        assert quiet.status_code == 200 and len(quiet.json()["images"]) == 1, quiet.text
        detected = api.controlnet_detect([circle], module="canny")
        assert detected.info == "Success" and len(detected.images) == 1
