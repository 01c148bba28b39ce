"""The worker against a real orchestrator — uvicorn on 127.0.0.1 (a free port) in its own thread,
a temporary SQLite database and a local blob directory: jobs end to end, the pipeline (next job
claimed while one generates), cancel, lost leases, graceful stop, SIGTERM, and an orchestrator
that is stopped and started again on the same port and database without losing results."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from sdfleet.config import Limits, WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.errors import StaleLease
from sdfleet.wire import ReleaseRequest, StopRequest
from sdfleet.worker.client import Backoff, Unreachable, WorkerClient
from sdfleet.worker.runner import Worker, run_worker
from tests.support.live import Orchestrator, make_settings, wait_until

WorkerFactory = Callable[..., Awaitable[Worker]]


# ===================================================================== a real orchestrator


class ShiftedClock:
    """Wall time plus an offset the test can move forward (leases expire without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Orchestrator settings a test changes (parametrize this name to override)."""
    return {}


@pytest.fixture
def orchestrator(
    tmp_path: Path, clock: ShiftedClock, settings_overrides: dict[str, Any]
) -> Iterator[Orchestrator]:
    orch = Orchestrator(make_settings(tmp_path, **settings_overrides), clock=clock)
    orch.start()
    try:
        yield orch
    finally:
        orch.stop()


@pytest.fixture
async def api(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the public jobs API (open mode on loopback: tenant ``local``)."""
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=10) as client:
        yield client


async def submit(api: httpx.AsyncClient, **params: Any) -> str:
    response = await api.post("/v1/jobs", json={"params": {"prompt": "a red fox in the snow", **params}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def get_job(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_state(
    api: httpx.AsyncClient, job_id: str, *states: str, timeout: float = 8.0
) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal job
        job = await get_job(api, job_id)
        return job["state"] in states

    await wait_until(check, timeout, f"job {job_id} to be {states}")
    return job


async def wait_running(api: httpx.AsyncClient, job_id: str, min_step: int = 1) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal job
        job = await get_job(api, job_id)
        return job["state"] == "running" and job["progress"]["step"] >= min_step

    await wait_until(check, what=f"job {job_id} to make progress")
    return job


@pytest.fixture
async def start_worker(orchestrator: Orchestrator) -> AsyncIterator[WorkerFactory]:
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def factory(engine: FakeEngine | None = None, **overrides: Any) -> Worker:
        inline_max_bytes = overrides.pop("inline_max_bytes", 256 * 1024)
        values: dict[str, Any] = {
            "server": orchestrator.url,
            "name": f"test-worker-{len(started)}",
            "engine": "fake",
            "prefetch": 1,
            "claim_wait": 1.0,
            "upload_concurrency": 2,
            "shutdown_grace": 5.0,
            **overrides,
        }
        settings = WorkerSettings(**values)
        client = WorkerClient(settings.server, settings.token, backoff=Backoff(base=0.05, cap=0.3))
        worker = Worker(
            settings,
            engine or FakeEngine(step_seconds=0.01),
            client=client,
            inline_max_bytes=inline_max_bytes,
        )
        task = asyncio.create_task(worker.run())
        started.append((worker, task))
        await wait_until(lambda: _true(worker.worker_id is not None), what="the worker to register")
        return worker

    yield factory
    for worker, task in started:
        await worker.stop()
        await task
        await worker.client.aclose()


async def _true(value: bool) -> bool:
    return value


# ===================================================================== end to end


@pytest.mark.parametrize("inline_max_bytes", [0, 1 << 20], ids=["uploaded", "inline"])
async def test_jobs_run_end_to_end_with_outputs_stored(
    api: httpx.AsyncClient, orchestrator: Orchestrator, start_worker: WorkerFactory, inline_max_bytes: int
) -> None:
    worker = await start_worker(inline_max_bytes=inline_max_bytes)
    one = await submit(api, seed=42, steps=4, width=256, height=192)
    two = await submit(api, seed=7, steps=3, width=128, height=128, batch_size=2)

    first = await wait_state(api, one, "succeeded", "failed")
    second = await wait_state(api, two, "succeeded", "failed")
    assert first["state"] == second["state"] == "succeeded"
    assert [o["seed"] for o in first["outputs"]] == [42]
    assert [o["seed"] for o in second["outputs"]] == [7, 8]
    assert first["engine_seconds"] > 0

    output = first["outputs"][0]
    response = await api.get(output["url"], follow_redirects=True)
    assert response.status_code == 200
    assert len(response.content) == output["size"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.size == (256, 192)
    params = image.info["parameters"]
    assert params.startswith("a red fox in the snow\n")
    assert "Seed: 42" in params
    assert 'Engine: "fake (test double, not a model)"' in params
    assert output["infotext"] == params

    blobs = sorted(p.name for p in (orchestrator.settings.data_dir / "blobs").rglob("*.png"))
    assert len(blobs) == 3
    assert worker.stats.jobs_completed == 2
    assert worker.stats.images == 3
    assert (worker.stats.bytes_uploaded > 0) == (inline_max_bytes == 0)


@pytest.mark.parametrize("settings_overrides", [{"limits": Limits(max_inline_output_bytes=2000)}])
async def test_outputs_are_uploaded_when_the_server_refuses_them_inline(
    api: httpx.AsyncClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(inline_max_bytes=1 << 20)
    ids = [await submit(api, steps=1, width=64, height=64, seed=i) for i in range(2)]
    sizes = []
    for job_id in ids:
        job = await wait_state(api, job_id, "succeeded", "failed")
        assert job["state"] == "succeeded", job["error"]
        sizes.append(job["outputs"][0]["size"])
    assert min(sizes) > 2000
    assert worker.stats.bytes_uploaded == sum(sizes)


async def test_engine_failures_are_reported_with_their_retryable_flag(
    api: httpx.AsyncClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(engine=FakeEngine(step_seconds=0.0, fail_every=1, fail_with="fatal"))
    job_id = await submit(api, steps=2)
    job = await wait_state(api, job_id, "failed")
    assert job["error"]["code"] == "engine_error"
    assert "injected fatal failure" in job["error"]["message"]
    assert worker.stats.jobs_failed == 1


# ===================================================================== the pipeline


async def test_pipelined_worker_claims_the_next_job_while_one_generates(
    api: httpx.AsyncClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(engine=FakeEngine(step_seconds=0.05))
    first = await submit(api, steps=16)
    await wait_running(api, first)
    second = await submit(api, steps=2)

    # the second job is handed to this worker while the first still generates
    async def both_running() -> bool:
        a, b = await get_job(api, first), await get_job(api, second)
        return a["state"] == "running" and a["progress"]["step"] < 16 and b["state"] == "running"

    await wait_until(both_running, what="two jobs running at once on one worker")
    assert worker.held_jobs == {first: "running", second: "waiting"}

    a = await wait_state(api, first, "succeeded")
    b = await wait_state(api, second, "succeeded")
    assert b["started_at"] < a["finished_at"]
    assert worker.stats.max_held == 2


async def test_sequential_worker_holds_one_job_at_a_time(
    api: httpx.AsyncClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(engine=FakeEngine(step_seconds=0.01), pipelined=False)
    ids = [await submit(api, steps=3) for _ in range(3)]
    jobs = [await wait_state(api, i, "succeeded") for i in ids]
    assert worker.stats.max_held == 1
    for earlier, later in itertools.pairwise(jobs):
        assert later["started_at"] >= earlier["finished_at"]


# ===================================================================== cancel and lost


async def test_cancel_reaches_a_running_job(api: httpx.AsyncClient, start_worker: WorkerFactory) -> None:
    engine = FakeEngine(step_seconds=0.02)
    worker = await start_worker(engine=engine)
    job_id = await submit(api, steps=150)  # 3 s of generation
    await wait_running(api, job_id, min_step=2)
    asked = time.monotonic()
    response = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text

    job = await wait_state(api, job_id, "canceled", timeout=3.0)
    assert time.monotonic() - asked < 1.5
    assert job["progress"]["step"] < 150
    await wait_until(lambda: _true(worker.stats.jobs_canceled == 1), what="the worker to count the cancel")
    assert worker.stats.engine_busy_seconds < 2.0
    assert worker.held_jobs == {}


async def test_cancel_of_a_prefetched_job_never_runs_it(
    api: httpx.AsyncClient, start_worker: WorkerFactory
) -> None:
    engine = FakeEngine(step_seconds=0.02)
    worker = await start_worker(engine=engine)
    first = await submit(api, steps=60)
    await wait_running(api, first)
    second = await submit(api, steps=60)
    await wait_until(
        lambda: _true(worker.held_jobs.get(second) == "waiting"), what="the second job prefetched"
    )
    assert (await api.post(f"/v1/jobs/{second}/cancel")).status_code == 200

    await wait_state(api, second, "canceled", timeout=3.0)
    await wait_state(api, first, "succeeded")
    assert engine.calls == 1


async def test_lost_lease_stops_the_job_and_the_new_holder_completes_it(
    api: httpx.AsyncClient, start_worker: WorkerFactory, clock: ShiftedClock
) -> None:
    # prefetch=0: the first worker claims nothing while it generates, so the re-queued job goes
    # to the second worker
    first = await start_worker(engine=FakeEngine(step_seconds=0.04), heartbeat_seconds=2.0, prefetch=0)
    job_id = await submit(api, steps=125)  # 5 s here
    await wait_running(api, job_id)  # progress shows right after the first heartbeat
    second = await start_worker(engine=FakeEngine(step_seconds=0.002))
    # now the lease (5 s) becomes long gone: the reaper (every 0.1 s) re-queues the job and the
    # second worker's long-polling claim takes it, well before the first worker's next heartbeat
    clock.offset += 60.0

    job = await wait_state(api, job_id, "succeeded")
    await wait_until(lambda: _true(first.stats.jobs_lost == 1), what="the first worker to drop the job")
    assert first.stats.jobs_stale == first.stats.jobs_completed == 0  # stopped, never completed
    assert first.stats.engine_busy_seconds < 4.5
    assert second.stats.jobs_completed == 1
    assert job["interruptions"] == 1
    assert len(job["outputs"]) == 1
    assert first.held_jobs == {}


# ===================================================================== stopping


@pytest.mark.parametrize(
    ("grace", "first_state"), [(5.0, "succeeded"), (0.1, "queued")], ids=["finish", "interrupt"]
)
async def test_graceful_stop_releases_waiting_job_and_finishes_or_releases_current(
    api: httpx.AsyncClient, start_worker: WorkerFactory, grace: float, first_state: str
) -> None:
    worker = await start_worker(engine=FakeEngine(step_seconds=0.02), shutdown_grace=grace)
    first = await submit(api, steps=40)  # 0.8 s
    await wait_running(api, first)
    second = await submit(api, steps=40)
    await wait_until(
        lambda: _true(worker.held_jobs.get(second) == "waiting"), what="the second job prefetched"
    )

    await worker.stop()

    assert (await get_job(api, second))["state"] == "queued"
    a = await get_job(api, first)
    assert a["state"] == first_state
    if first_state == "succeeded":
        assert len(a["outputs"]) == 1
        assert worker.stats.jobs_released == 1
    else:
        assert a["interruptions"] == 1
        assert worker.stats.jobs_released == 2
    assert worker.held_jobs == {}
    workers = (await api.get("/v1/admin/workers")).json()["workers"]
    states = {w["name"]: w["state"] for w in workers}
    assert states[worker.name] == "stopped"


async def test_sigterm_stops_run_worker_cleanly(api: httpx.AsyncClient, orchestrator: Orchestrator) -> None:
    settings = WorkerSettings(
        server=orchestrator.url,
        name="sigterm-worker",
        engine="fake",
        fake_step_seconds=0.02,
        claim_wait=1.0,
        shutdown_grace=5.0,
    )
    task = asyncio.create_task(run_worker(settings))
    job_id = await submit(api, steps=30)
    await wait_running(api, job_id)

    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=5.0)

    job = await get_job(api, job_id)
    assert job["state"] == "succeeded"


# ===================================================================== orchestrator restart


async def test_orchestrator_restart_loses_no_results(
    api: httpx.AsyncClient, orchestrator: Orchestrator, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(engine=FakeEngine(step_seconds=0.02), inline_max_bytes=0)
    ids = [await submit(api, steps=10, seed=100 + i) for i in range(6)]
    await wait_state(api, ids[0], "succeeded")

    await orchestrator.astop()  # the worker keeps generating; its calls fail and are retried
    await asyncio.sleep(1.5)
    await orchestrator.astart()

    jobs = [await wait_state(api, i, "succeeded", timeout=10.0) for i in ids]
    for i, job in enumerate(jobs):
        assert [o["seed"] for o in job["outputs"]] == [100 + i]
        response = await api.get(job["outputs"][0]["url"], follow_redirects=True)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).info["parameters"].count("Seed: ") == 1
    assert worker.stats.jobs_completed == 6
    assert worker.stats.jobs_stale == worker.stats.jobs_lost == 0


# ===================================================================== the client on a scripted network


async def test_client_retries_5xx_and_maps_4xx_and_keeps_the_token_off_presigned_urls() -> None:
    seen: list[httpx.Request] = []
    answers = iter([503, 502, 200])

    def network(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/worker/stop":
            return httpx.Response(next(answers), json={"worker_id": "w", "state": "stopped"})
        if request.url.path == "/v1/worker/release":
            body = {"error": {"code": "stale_lease", "message": "epoch 1 is not current", "field": "epoch"}}
            return httpx.Response(409, json=body)
        return httpx.Response(201, json={})

    client = WorkerClient(
        "http://orchestrator.test:7860/",
        "secret-token",
        transport=httpx.MockTransport(network),
        backoff=Backoff(base=0.001, cap=0.002, floor=0.0),
    )
    async with client:
        await client.stop(StopRequest(worker_id="w"))
        assert [r.url.path for r in seen] == ["/v1/worker/stop"] * 3
        assert seen[0].headers["authorization"] == "Bearer secret-token"

        with pytest.raises(StaleLease) as caught:
            await client.release(ReleaseRequest(worker_id="w", job_id="j", epoch=1))
        assert caught.value.field == "epoch"
        assert caught.value.details["status"] == 409

        await client.put_blob("/v1/worker/blobs/outputs/a.png?exp=1&sig=x", b"png", "image/png")
        assert str(seen[-1].url) == "http://orchestrator.test:7860/v1/worker/blobs/outputs/a.png?exp=1&sig=x"
        assert seen[-1].headers["authorization"] == "Bearer secret-token"
        await client.put_blob(
            "https://bucket.s3.example/outputs/a.png?X-Amz-Signature=s", b"png", "image/png"
        )
        assert "authorization" not in seen[-1].headers
        assert seen[-1].headers["content-type"] == "image/png"

    down = WorkerClient(
        "http://127.0.0.1:9/", transport=httpx.MockTransport(lambda r: httpx.Response(503)), retry_for=0.05
    )
    async with down:
        with pytest.raises(Unreachable):
            await down.stop(StopRequest(worker_id="w"))


async def test_img2img_input_reaches_the_engine(api: httpx.AsyncClient, start_worker: WorkerFactory) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buf, format="PNG")
    init = base64.b64encode(buf.getvalue()).decode()
    body = {
        "kind": "img2img",
        "params": {
            "prompt": "x",
            "width": 64,
            "height": 64,
            "steps": 2,
            "denoising_strength": 0.0,
            "init_images": [init],
        },
    }
    job = (await api.post("/v1/jobs", json=body)).json()
    await start_worker()
    done = await wait_state(api, job["id"], "succeeded")
    image = Image.open(io.BytesIO((await api.get(done["outputs"][0]["url"])).content)).convert("RGB")
    assert image.getpixel((10, 10)) == (255, 0, 0)  # strength 0 keeps the input
