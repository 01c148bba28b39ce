"""Registry models fetched on demand by real workers against a real orchestrator: a LoRA registered
with an ``http://127.0.0.1`` source is downloaded on first use (with the tiny SD 1.x model and the
diffusers engine), cached, and used; the next job does not download it again. With the FakeEngine:
the models of a claimed-ahead job are fetched while the current job generates, and a file whose
sha256 does not match the registry fails the job as retryable ``model_unavailable``."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdfleet.config import WorkerSettings
from sdfleet.engine.base import Engine
from sdfleet.engine.fake import FakeEngine
from sdfleet.models import ModelCache, ModelResolver
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.runner import Worker
from tests.support.files import FileServer
from tests.support.live import Orchestrator, make_settings, wait_until


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    orch = Orchestrator(make_settings(tmp_path))
    orch.start()
    try:
        yield orch
    finally:
        orch.stop()


@pytest.fixture
async def api(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=30) as client:
        yield client


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


class Workers:
    def __init__(self, orchestrator: Orchestrator, tmp_path: Path) -> None:
        self.orchestrator = orchestrator
        self.tmp_path = tmp_path
        self.running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, engine: Engine, resolver: ModelResolver, **overrides: Any) -> Worker:
        settings = WorkerSettings(
            server=self.orchestrator.url,
            name=f"models-worker-{len(self.running)}",
            engine=engine.name,
            prefetch=1,
            claim_wait=1.0,
            shutdown_grace=5.0,
            cache_dir=self.tmp_path / "model-cache",
            allow_private_model_urls=True,  # the test's file server is on 127.0.0.1
            **overrides,
        )
        client = WorkerClient(settings.server, settings.token, backoff=Backoff(base=0.05, cap=0.3))
        cache = ModelCache.from_settings(settings, progress=False, retry_base=0.01)
        worker = Worker(settings, engine, client=client, cache=cache, resolver=resolver)
        task = asyncio.create_task(worker.run())
        self.running.append((worker, task))
        await wait_until(lambda: _true(worker.worker_id is not None), what="the worker to register")
        return worker

    async def stop(self) -> None:
        for worker, task in self.running:
            await worker.stop()
            await task
            await worker.client.aclose()
            await worker.cache.aclose()


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def workers(orchestrator: Orchestrator, tmp_path: Path) -> AsyncIterator[Workers]:
    pool = Workers(orchestrator, tmp_path)
    yield pool
    await pool.stop()


async def register(api: httpx.AsyncClient, name: str, url: str, data: bytes, **extra: Any) -> None:
    body = {
        "name": name,
        "kind": "lora",
        "arch": "sd1",
        "source": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }
    response = await api.post("/v1/models", json=body)
    assert response.status_code == 201, response.text


async def submit(api: httpx.AsyncClient, **params: Any) -> str:
    response = await api.post("/v1/jobs", json={"params": params})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finished(api: httpx.AsyncClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        return job["state"] in ("succeeded", "failed", "canceled")

    await wait_until(done, timeout=timeout, what=f"job {job_id} to finish")
    return job


async def pixels(api: httpx.AsyncClient, job: dict[str, Any]) -> np.ndarray:
    response = await api.get(job["outputs"][0]["url"], follow_redirects=True)
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


# ===================================================================== diffusers, tiny SD 1.x


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")
async def test_a_lora_from_an_http_source_is_downloaded_once_cached_and_used(
    api: httpx.AsyncClient, workers: Workers, files: FileServer, tiny_models: Any, tmp_path: Path
) -> None:
    import torch

    from sdfleet.engine.sd.engine import DiffusersEngine

    torch.set_num_threads(1)
    resolver = ModelResolver()
    engine = DiffusersEngine(
        tiny_models.sd1_file,
        models=resolver.checkpoint,
        loras=resolver.lora,
        vaes=resolver.vae,
        device="cpu",
    )
    data = tiny_models.lora_kohya.read_bytes()
    url = files.add("/loras/tinykohya.safetensors", data)
    await register(api, "remote-style", url, data)
    worker = await workers.start(engine, resolver)
    common = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "cfg_scale": 5.0}

    first = await finished(
        api, await submit(api, prompt="a photo of a cat <lora:remote-style:1>", seed=11, **common)
    )
    assert first["state"] == "succeeded", first["error"]
    assert files.count("/loras/tinykohya.safetensors") == 1
    infotext = first["outputs"][0]["infotext"]
    assert "<lora:remote-style:1>" in infotext and 'Lora hashes: "remote-style: ' in infotext
    digest = hashlib.sha256(data).hexdigest()
    cached = tmp_path / "model-cache" / "blobs" / digest[:2] / f"{digest}.safetensors"
    assert cached.read_bytes() == data
    assert worker.cache.names_on_disk() == ["remote-style"]

    # the second job with it: from the cache, no new download
    second = await finished(
        api,
        await submit(
            api, prompt="a photo of a dog", loras=[{"name": "remote-style", "weight": 0.7}], seed=12, **common
        ),
    )
    assert second["state"] == "succeeded", second["error"]
    assert files.count("/loras/tinykohya.safetensors") == 1

    # and it changed the picture: the same job without it draws something else
    plain = await finished(api, await submit(api, prompt="a photo of a cat", seed=11, **common))
    assert plain["state"] == "succeeded", plain["error"]
    assert not np.array_equal(await pixels(api, first), await pixels(api, plain))
    assert "lora:remote-style" in engine.loaded_models()


# ===================================================================== the pipeline, FakeEngine


async def test_the_models_of_a_claimed_ahead_job_are_fetched_while_the_current_one_runs(
    api: httpx.AsyncClient, workers: Workers, files: FileServer
) -> None:
    resolver = ModelResolver()
    engine = FakeEngine(step_seconds=0.05, lookup=resolver.lookup)
    data = b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}' + bytes(200_000)
    url = files.add("/lora.safetensors", data)
    await register(api, "later", url, data)
    await workers.start(engine, resolver)

    current = await submit(api, prompt="first", steps=30)
    ahead = await submit(api, prompt="second <lora:later:0.5>", steps=2)
    first, second = await finished(api, current), await finished(api, ahead)
    assert first["state"] == second["state"] == "succeeded", (first["error"], second["error"])
    hits = files.hits_for("/lora.safetensors")
    assert len(hits) == 1
    assert hits[0].at < first["finished_at"]  # downloaded while the first job was generating
    digest = hashlib.sha256(data).hexdigest()
    assert second["result"]["info"]["model_files"] == f"later: {digest}.safetensors"


async def test_a_file_that_does_not_match_the_registry_fails_the_job_as_retryable(
    api: httpx.AsyncClient, workers: Workers, files: FileServer, tmp_path: Path
) -> None:
    resolver = ModelResolver()
    data = b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}' + bytes(1000)
    url = files.add("/tampered.safetensors", data + b"tampered")
    await register(api, "tampered", url, data, size=len(data) + 8)
    worker = await workers.start(FakeEngine(step_seconds=0.0, lookup=resolver.lookup), resolver)
    job_id = await submit(api, prompt="x <lora:tampered:1>", steps=1)

    async def failed_once() -> bool:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        return bool(job["failures"] >= 1)

    await wait_until(failed_once, timeout=20, what="the job to fail once")
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["state"] == "queued"  # retryable: back in the queue for another worker
    assert worker.stats.jobs_failed == 1
    blobs = tmp_path / "model-cache" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
    assert "sha256 mismatch" in job["wait_reason"] and "the file was deleted" in job["wait_reason"]
