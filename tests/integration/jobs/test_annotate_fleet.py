"""Preprocessing as its own service, on a live orchestrator: one annotate-only CPU worker (``--role annotate``:
no engine) and one generation worker (the real diffusers engine on the tiny SD 1.x model and ControlNet). A
ControlNet request with ``module: canny`` waits for its annotate job (``wait_reason``), which the annotate
worker runs with our canny; then the generation runs on the map, its infotext naming the module. A second
request with the same image hits the fleet-wide cache: no annotate job at all. An annotate job that fails fails
its generation with the child's code; cancelling a waiting generation cancels its annotate job."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from sdfleet.config import WorkerSettings
from sdfleet.engine import load_engine
from sdfleet.models import ModelResolver
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.kinds import default_kinds
from sdfleet.worker.runner import Worker
from tests.support.live import Orchestrator, make_settings, wait_until

pytest.importorskip("cv2", reason="annotate workers need OpenCV (the [annotators] extra)")

from sdfleet.engine.controlnet.preprocess import preprocess
from sdfleet.worker.annotate import AnnotatorHost, annotate_kinds


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    server = Orchestrator(make_settings(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=30) as client:
        yield client


class Fleet:
    """In-process workers of either role on one orchestrator."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, role: str, **overrides: Any) -> Worker:
        index = len(self.workers)
        settings = WorkerSettings(
            server=self.url,
            name=f"{role}-{index}",
            role=role,  # type: ignore[arg-type]
            prefetch=0,
            claim_wait=1.0,
            shutdown_grace=5.0,
            cache_dir=self.root / f"cache-{index}",
            **overrides,
        )
        client = WorkerClient(settings.server, settings.token, backoff=Backoff(base=0.05, cap=0.3))
        resolver = ModelResolver()
        if role == "annotate":
            worker = Worker(
                settings, AnnotatorHost(), client=client, resolver=resolver, kinds=annotate_kinds()
            )
        else:  # generation only here, so that the annotate worker is the one that preprocesses
            engine = load_engine(
                "diffusers", model=settings.model, device="cpu", fake_step_seconds=0, lookup=resolver.lookup
            )
            kinds = {k: v for k, v in default_kinds().items() if k != "annotate"}
            worker = Worker(settings, engine, client=client, resolver=resolver, kinds=kinds)
        task = asyncio.create_task(worker.run())
        self.workers.append((worker, task))

        async def registered() -> bool:
            return worker.worker_id is not None

        await wait_until(registered, 30, f"the {role} worker to register")
        return worker

    async def stop(self) -> None:
        for worker, task in self.workers:
            await worker.stop()
            await task
            await worker.client.aclose()


@pytest.fixture
async def fleet(orchestrator: Orchestrator, tmp_path: Path) -> AsyncIterator[Fleet]:
    workers = Fleet(orchestrator.url, tmp_path)
    try:
        yield workers
    finally:
        await workers.stop()


def _circle() -> tuple[Image.Image, str]:
    image = Image.new("RGB", (64, 64), (90, 90, 90))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(230, 200, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return image, base64.b64encode(buf.getvalue()).decode()


async def _register(api: httpx.AsyncClient, name: str, kind: str, source: Path, arch: str) -> None:
    r = await api.post("/v1/models", json={"name": name, "kind": kind, "source": str(source), "arch": arch})
    assert r.status_code in (200, 201), r.text


async def _ended(api: httpx.AsyncClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def ended() -> bool:
        seen.update((await api.get(f"/v1/jobs/{job_id}")).json())
        return seen["state"] in ("succeeded", "failed", "canceled")

    await wait_until(ended, timeout, f"job {job_id} to end")
    return seen


async def _children(api: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = (await api.get("/v1/jobs", params={"parent": job_id})).json()["jobs"]
    return jobs


def _params(image: str, **unit: Any) -> dict[str, Any]:
    return {
        "prompt": "a circle",
        "width": 32,
        "height": 32,
        "steps": 2,
        "seed": 7,
        "model": "tiny-sd1",
        "controlnet": [
            {"model": "tiny-cn", "image": image, "module": "canny", "processor_res": 64, **unit},
        ],
    }


async def test_annotate_worker_preprocesses_then_the_cache_serves_the_fleet(
    api: httpx.AsyncClient, fleet: Fleet, tiny_models: Any
) -> None:
    await _register(api, "tiny-sd1", "checkpoint", tiny_models.sd1_file, "sd1")
    await _register(api, "tiny-cn", "controlnet", tiny_models.controlnet_sd1_file, "sd1")
    annotator = await fleet.start("annotate")
    generator = await fleet.start("generate", model=str(tiny_models.sd1_file))
    picture, image = _circle()

    r = await api.post("/v1/jobs", json={"params": _params(image, threshold_a=50, threshold_b=120)})
    assert r.status_code in (200, 201), r.text
    first = r.json()
    assert first["state"] == "waiting", first
    assert "waiting for preprocessing: canny for controlnet.0 (annotate job" in first["wait_reason"]
    done = await _ended(api, first["id"])
    assert done["state"] == "succeeded", done

    [child] = await _children(api, first["id"])
    assert child["kind"] == "annotate" and child["state"] == "succeeded"
    assert child["params"]["module"] == "canny" and child["params"]["processor_res"] == 64
    assert annotator.stats.jobs_completed == 1 and generator.stats.jobs_completed == 1
    # the map is our canny of the picture, pixel for pixel, and it is in the fleet-wide cache
    got = Image.open(io.BytesIO((await api.get(child["outputs"][0]["url"])).content)).convert("RGB")
    made = preprocess("canny", picture, resolution=64, threshold_a=50, threshold_b=120)
    assert got.tobytes() == made.tobytes()
    unit = done["params"]["controlnet"][0]
    assert unit["preprocessed"] is True and unit["module"] == "canny"
    assert unit["image"] == "blob:" + child["params"]["cache_key"]
    assert unit["image"].startswith("blob:annotations/")
    out = Image.open(io.BytesIO((await api.get(done["outputs"][0]["url"])).content))
    assert 'ControlNet 0: "Module: canny, Model: tiny-cn [' in out.info["parameters"]

    # the same image and parameters again (the thresholds said differently, normalised the same): the cache
    second = (
        await api.post("/v1/jobs", json={"params": _params(image, threshold_a=50.0, threshold_b=120)})
    ).json()
    assert second["state"] == "queued" and not second["wait_reason"], second
    assert second["params"]["controlnet"][0]["image"] == unit["image"]
    again = await _ended(api, second["id"])
    assert again["state"] == "succeeded", again
    assert await _children(api, second["id"]) == []
    assert annotator.stats.jobs_completed == 1 and generator.stats.jobs_completed == 2
    # the generation saw the same map: the same seed draws the same picture
    again_out = Image.open(io.BytesIO((await api.get(again["outputs"][0]["url"])).content))
    assert again_out.tobytes() == out.tobytes()

    # other parameters make another map: a new annotate job
    third = (await api.post("/v1/jobs", json={"params": _params(image, threshold_a=10)})).json()
    assert third["state"] == "waiting"
    assert (await _ended(api, third["id"]))["state"] == "succeeded"
    assert annotator.stats.jobs_completed == 2

    # an annotate job on its own (the native API): its output is the map; a module nobody runs is a 422
    alone = {"kind": "annotate", "params": {"module": "Canny", "image": image, "processor_res": 64}}
    job = (await api.post("/v1/jobs", json=alone)).json()
    assert job["params"]["module"] == "canny" and job["params"]["threshold_a"] == 100
    finished = await _ended(api, job["id"])
    got = Image.open(io.BytesIO((await api.get(finished["outputs"][0]["url"])).content)).convert("RGB")
    assert got.tobytes() == preprocess("canny", picture, resolution=64).tobytes()
    bad = {"kind": "annotate", "params": {"module": "openpose_full", "image": image}}
    r = await api.post("/v1/jobs", json=bad)
    assert r.status_code == 422 and "params.module" in r.text, r.text


async def test_a_failed_annotate_job_fails_the_generation_and_cancel_reaches_it(
    api: httpx.AsyncClient, fleet: Fleet, tmp_path: Path
) -> None:
    # registry entries only: these jobs never reach a generation worker
    files = {
        "ckpt": tmp_path / "ckpt.safetensors",
        "cn": tmp_path / "cn.safetensors",
        "depth": tmp_path / "d.onnx",
    }
    for name, path in files.items():
        path.write_bytes(name.encode() * 64)
    await _register(api, "tiny-sd1", "checkpoint", files["ckpt"], "sd1")
    await _register(api, "tiny-cn", "controlnet", files["cn"], "sd1")
    _, image = _circle()

    # a module with weights and no annotator registered: 422 naming the unit's module
    r = await api.post("/v1/jobs", json={"params": _params(image, module="depth")})
    assert r.status_code == 422 and "params.controlnet.0.module" in r.text and "annotator" in r.text, r.text
    await _register(api, "junk-midas", "annotator", files["depth"], "midas")

    # nobody runs annotate jobs yet: the generation waits; cancelling it cancels its annotate job
    waiting = (await api.post("/v1/jobs", json={"params": _params(image, module="depth")})).json()
    assert waiting["state"] == "waiting" and "depth_midas for controlnet.0" in waiting["wait_reason"]
    [child] = await _children(api, waiting["id"])
    assert child["kind"] == "annotate" and child["params"]["model"] == "junk-midas"
    # nobody online can take the annotate job: the generation says so too
    stuck: dict[str, Any] = {}

    async def says_why() -> bool:
        stuck.update((await api.get(f"/v1/jobs/{waiting['id']}")).json())
        return "no worker" in (stuck["wait_reason"] or "")

    await wait_until(says_why, 10, "the generation to say why its annotate job waits")
    assert stuck["wait_reason"].startswith("waiting for preprocessing: depth_midas for controlnet.0")
    assert f"annotate job {child['id']}: no worker" in stuck["wait_reason"], stuck
    assert (await api.post(f"/v1/jobs/{waiting['id']}/cancel")).status_code == 200
    assert (await _ended(api, waiting["id"]))["state"] == "canceled"
    assert (await _ended(api, child["id"]))["state"] == "canceled"

    # an annotate worker whose annotator will not load: the child fails for good, and so does the generation
    await fleet.start("annotate")
    failing = (await api.post("/v1/jobs", json={"params": _params(image, module="depth")})).json()
    ended = await _ended(api, failing["id"], 60)
    [child] = await _children(api, failing["id"])
    assert child["state"] == "failed", child
    assert ended["state"] == "failed" and ended["error"]["code"] == child["error"]["code"], ended
    assert "does not load as an ONNX model" in ended["error"]["message"]
