"""`sdfleet up` with the real diffusers engine (no --engine flag) on a tiny single-file checkpoint:
the checkpoint is registered under its name, jobs naming it run through the real engine, and every
PNG carries A1111 infotext that parses back to the request."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from sdfleet.a1111 import parse_infotext
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def test_up_serves_a_single_file_checkpoint(tmp_path: Path, tiny_models: Any) -> None:
    port = free_port()
    env = {**os.environ, "SDFLEET_LOG_LEVEL": "warning"}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdfleet",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--model",
            str(tiny_models.sd1_file),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: (tmp_path / "data" / "run" / "processes.json").exists(), 120, "sdfleet up")
        with httpx.Client(base_url=base, timeout=30) as client:
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
            done = wait_until(
                lambda: (
                    (j := client.get(f"/v1/jobs/{job['id']}").json())["state"] in ("succeeded", "failed")
                    and j
                ),
                180,
                "the job",
            )
            assert done["state"] == "succeeded", done
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
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0, (up.stderr.read() if up.stderr else b"").decode()[-3000:]
