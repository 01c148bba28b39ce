"""``sdfleet worker --role annotate`` as a real process on a live orchestrator: it registers annotate (and the
depth feature, onnxruntime being installed) and nothing else, fetches a registered ONNX annotator through its
model cache, and preprocesses a generation's ``depth`` unit; with no generation worker the generation then
waits its turn, queued, and cancelling it ends it."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support import wait_until
from tests.support.live import Orchestrator, make_settings

pytest.importorskip("cv2", reason="annotate workers need OpenCV (the [annotators] extra)")
pytest.importorskip("onnxruntime", reason="the depth annotators need onnxruntime (the [annotators] extra)")
pytest.importorskip("onnx", reason="the tests write their ONNX models with onnx")

from tests.support.onnx_models import channel_depth_model


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    server = Orchestrator(make_settings(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def annotate_worker(orchestrator: Orchestrator, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "SDFLEET_LOG_LEVEL": "warning", "SDFLEET_WORKER_CLAIM_WAIT": "1"}
    argv = [sys.executable, "-m", "sdfleet", "worker", "--role", "annotate", "--server", orchestrator.url]
    argv += ["--name", "cpu-annotator", "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 0, (proc.stderr.read() if proc.stderr else b"").decode()[-3000:]


def _ramp() -> str:
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, 255 - x * 4], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_an_annotate_worker_process_runs_a_depth_unit(
    orchestrator: Orchestrator, annotate_worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    files = {"ckpt": tmp_path / "ckpt.safetensors", "cn": tmp_path / "cn.safetensors"}
    for name, path in files.items():
        path.write_bytes(name.encode() * 64)
    depth = channel_depth_model(tmp_path / "midas.onnx")
    with httpx.Client(base_url=orchestrator.url, timeout=30) as api:
        for name, kind, source, arch in (
            ("tiny-sd1", "checkpoint", files["ckpt"], "sd1"),
            ("tiny-cn", "controlnet", files["cn"], "sd1"),
            ("tiny-midas", "annotator", depth, "midas"),
        ):
            r = api.post("/v1/models", json={"name": name, "kind": kind, "source": str(source), "arch": arch})
            assert r.status_code in (200, 201), r.text
        workers: list[dict[str, Any]] = wait_until(
            lambda: api.get("/v1/admin/workers").json()["workers"] or None, 60, "the annotate worker"
        )
        [caps] = [w["capabilities"] for w in workers]
        assert caps["kinds"] == ["annotate"] and "annotate_depth" in caps["features"], caps
        params = {
            "prompt": "x",
            "width": 32,
            "height": 32,
            "steps": 2,
            "model": "tiny-sd1",
            "controlnet": [{"model": "tiny-cn", "image": _ramp(), "module": "depth", "processor_res": 64}],
        }
        job = api.post("/v1/jobs", json={"params": params}).json()
        assert job["state"] == "waiting" and "depth_midas" in job["wait_reason"], job

        def queued() -> dict[str, Any] | None:
            seen: dict[str, Any] = api.get(f"/v1/jobs/{job['id']}").json()
            return seen if seen["state"] != "waiting" else None

        resumed = wait_until(queued, 60, "the depth map")
        assert resumed["state"] == "queued", resumed  # no generation worker here: it waits its turn
        unit = resumed["params"]["controlnet"][0]
        assert unit["preprocessed"] is True and unit["image"].startswith("blob:annotations/")
        [child] = api.get("/v1/jobs", params={"parent": job["id"]}).json()["jobs"]
        assert child["state"] == "succeeded" and child["params"]["model"] == "tiny-midas"
        made = Image.open(io.BytesIO(api.get(child["outputs"][0]["url"]).content))
        pixels = np.asarray(made.convert("RGB"))
        assert made.size == (85, 64) and pixels.min() == 0 and pixels.max() == 255  # short side 64, 8 bits
        assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "canceled"
