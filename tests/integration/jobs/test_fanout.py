"""Jobs that fan out, on a live orchestrator with real workers: an SD upscale parent's tiles are claimed by
different workers and blended into one seamless picture; a vanished worker's tile is re-run (the tile, not
the parent); cancelling the parent cancels its tiles; a failing tile fails the parent with its reason."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdfleet.engine.fake import FakeEngine
from sdfleet.wire import ClaimRequest, RegisterRequest, WorkerCapabilities
from sdfleet.worker.client import WorkerClient
from tests.support.live import Orchestrator, WorkerPool, make_settings, wait_until

pytest.importorskip("torch", reason="workers run upscale jobs with torch installed")


class ShiftedClock:
    """The orchestrator's clock, movable forward (a lease that runs out without waiting for it)."""

    def __init__(self) -> None:
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def orchestrator(tmp_path: Path, clock: ShiftedClock) -> Iterator[Orchestrator]:
    server = Orchestrator(make_settings(tmp_path), clock=clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=30) as client:
        yield client


@pytest.fixture
async def workers(orchestrator: Orchestrator) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(orchestrator.url)
    try:
        yield pool
    finally:
        await pool.stop()


def _picture(width: int, height: int) -> str:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _body(**generation: Any) -> dict[str, Any]:
    """A 64×48 picture ×2 (128×96) in 64×64 tiles overlapping by 16: 3 × 2 = 6 tiles."""
    return {
        "kind": "sd_upscale",
        "params": {
            "image": _picture(64, 48),
            "upscaler": "Lanczos",
            "scale": 2,
            "overlap": 16,
            "generation": {
                "prompt": "a red circle",
                "steps": 4,
                "width": 64,
                "height": 64,
                "seed": 5,
                **generation,
            },
        },
    }


async def _wait(api: httpx.AsyncClient, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def done() -> bool:
        seen.update((await api.get(f"/v1/jobs/{job_id}")).json())
        return seen["state"] in states

    await wait_until(done, timeout=timeout, what=f"job {job_id} to be {states}")
    return seen


async def _children(api: httpx.AsyncClient, parent: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = (await api.get("/v1/jobs", params={"parent": parent, "limit": 500})).json()[
        "jobs"
    ]
    return jobs


async def test_tiles_run_on_several_workers_and_blend_into_one_picture(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    pool = [await workers.start(FakeEngine(step_seconds=0.05)) for _ in range(4)]
    r = await api.post("/v1/jobs", json=_body())
    assert r.status_code == 201, r.text
    parent = r.json()
    assert parent["state"] == "waiting" and parent["progress"]["total"] == 7  # the upscale + 6 tiles
    done = await _wait(api, parent["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", done
    [output] = done["outputs"]
    image = Image.open(io.BytesIO((await api.get(output["url"])).content))
    assert image.size == (128, 96)
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in image.info["parameters"]
    children = await _children(api, parent["id"])
    assert sorted(c["kind"] for c in children) == ["img2img"] * 6 + ["upscale"]
    assert all(c["state"] == "succeeded" and c["parent_id"] == parent["id"] for c in children)
    tiles = [c for c in children if c["kind"] == "img2img"]
    assert {(c["params"]["width"], c["params"]["height"]) for c in tiles} == {(64, 64)}
    assert sum(w.stats.jobs_completed > 0 for w in pool) >= 2  # the tiles spread over the workers
    assert done["progress"] == {**done["progress"], "step": 7, "total": 7}
    assert done["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in children))
    # the parent is listed; its children only under ?parent=
    listed = {j["id"] for j in (await api.get("/v1/jobs")).json()["jobs"]}
    assert parent["id"] in listed and not listed & {c["id"] for c in children}


async def test_seams_are_blended_not_cut() -> None:
    """The grid's own blend: constant tiles of two colours meet in a ramp across the shared strip."""
    from sdfleet.specs.sdupscale import Grid

    grid = Grid.cover((112, 64), (64, 64), 16)
    assert grid.xs == (0, 48) and grid.ys == (0,)
    out = np.asarray(
        grid.combine([Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64), (255, 0, 0))])
    )
    red = out[32, :, 0].astype(int)
    assert red[:48].max() == 0 and red[64:].min() == 255  # each tile alone outside the strip
    strip = red[48:64]
    assert (np.diff(strip) > 0).all() and 0 < strip[0] < 40 and 215 < strip[-1] < 255  # a ramp across it


async def test_a_vanished_workers_tile_is_rerun_not_the_parent(
    api: httpx.AsyncClient, workers: WorkerPool, orchestrator: Orchestrator, clock: ShiftedClock
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    r = await api.post("/v1/jobs", json=_body())
    parent = r.json()["id"]
    await wait_until(lambda: _has_tiles(api, parent), what="the tiles to be queued")
    await workers.stop()
    # a worker that claims a tile and vanishes (no heartbeat, no release)
    async with WorkerClient(orchestrator.url, "") as ghost:
        reg = await ghost.register(
            RegisterRequest(name="ghost", capabilities=WorkerCapabilities(kinds=["img2img"], features=[]))
        )
        claimed = await ghost.claim(ClaimRequest(worker_id=reg.worker_id, max_jobs=1, wait=2.0))
        [lost] = claimed.jobs
    # stopping the pool may have released this tile once already (an interruption too)
    before = (await api.get(f"/v1/jobs/{lost.job_id}")).json()["interruptions"]
    clock.offset += 120.0  # its lease runs out: the reaper queues the tile again
    await workers.start(FakeEngine(step_seconds=0.0))
    done = await _wait(api, parent, "succeeded", "failed")
    assert done["state"] == "succeeded", done
    tile = (await api.get(f"/v1/jobs/{lost.job_id}")).json()
    assert tile["state"] == "succeeded" and tile["interruptions"] == before + 1  # the lost lease: one more
    assert done["interruptions"] == 0 and done["failures"] == 0


async def _has_tiles(api: httpx.AsyncClient, parent: str) -> bool:
    return any(c["kind"] == "img2img" for c in await _children(api, parent))


async def test_cancelling_the_parent_cancels_its_tiles(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    await workers.start(FakeEngine(step_seconds=0.01))  # 1.5 s a tile: none can finish before the cancel
    r = await api.post("/v1/jobs", json=_body(steps=150))
    parent = r.json()["id"]
    await wait_until(lambda: _has_tiles(api, parent), what="the tiles to be queued")
    r = await api.post(f"/v1/jobs/{parent}/cancel")
    assert r.json()["state"] == "canceled"
    await asyncio.sleep(0.3)
    children = await _children(api, parent)
    tiles = [c for c in children if c["kind"] == "img2img"]
    assert tiles and all(c["state"] == "canceled" or c["cancel_requested"] for c in tiles)

    async def settled() -> bool:
        return all(c["state"] in ("canceled", "succeeded") for c in await _children(api, parent))

    await wait_until(settled, what="the running tile to stop")
    assert (await api.get(f"/v1/jobs/{parent}")).json()["state"] == "canceled"


async def test_a_failing_tile_fails_the_parent_with_its_reason(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0, fail_every=1, fail_with="fatal"))
    r = await api.post("/v1/jobs", json=_body())
    done = await _wait(api, r.json()["id"], "succeeded", "failed")
    assert done["state"] == "failed"
    assert "img2img" in done["error"]["message"] and "failed" in done["error"]["message"]


async def test_bad_sd_upscale_bodies_are_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    cases = [
        ({"upscaler": "R-ESRGAN 9x"}, "params.upscaler"),
        ({"scale": 20}, "params.scale"),
        ({"generation": {"width": 64, "height": 64, "batch_size": 2}}, "params.generation.batch_size"),
        ({"generation": {"width": 16, "height": 16}, "scale": 8}, "params.scale"),  # too many tiles
    ]
    for change, field in cases:
        body = _body()
        body["params"].update(change)
        r = await api.post("/v1/jobs", json=body)
        assert r.status_code in (413, 422, 429), (change, r.text)
        assert field in r.text, (change, r.text)
    assert (await api.get("/v1/jobs")).json()["jobs"] == []  # nothing stored
