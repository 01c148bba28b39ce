"""Bad input images cannot quarantine the fleet (issue 14): one fake PNG and one decompression bomb among
200 plain jobs on 3 workers. At the edge both are refused (422, nothing stored); and when such jobs get past
the edge anyway (rows stored through the service, as an older version or a direct insert would), each worker
that decodes one fails it as ``invalid_input`` naming the image — non-retryable, counted against no worker —
so no worker is quarantined, the two jobs fail, and all 200 plain jobs succeed.

A live orchestrator (uvicorn, real SQLite, real blob directory), three in-process workers (FakeEngine,
which decodes init images as the real engine does) over real HTTP."""

from __future__ import annotations

import base64
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest

from sdfleet.domain import GenerationSpec, JobKind, JobState
from sdfleet.engine.fake import FakeEngine
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import JobRequest
from sdfleet.store.sql import SqlStore
from tests.support.live import Orchestrator, WorkerPool, make_settings, wait_until

pytestmark = pytest.mark.slow  # 22-35 s on 2 shared cores

PLAIN = 200


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def fake_png() -> bytes:
    """PNG magic bytes, then garbage."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00garbage, not an image" * 20


def bomb_png() -> bytes:
    """A valid PNG header that promises 100,000 × 100,000 pixels (10 gigapixels), in a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_001 * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


async def api_check(url: str, job_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        view: dict[str, object] = (await api.get(f"/v1/jobs/{job_id}")).json()
        return view


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _img2img(data: bytes) -> dict[str, object]:
    params = {"prompt": "bad", "width": 64, "height": 64, "steps": 2, "init_images": [_data_url(data)]}
    return {"kind": "img2img", "params": params}


async def test_bad_images_fail_alone_and_quarantine_no_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, quarantine_failures=2, lease_seconds=10.0)
    server = Orchestrator(settings)
    await server.astart()
    pool = WorkerPool(server.url)
    store = SqlStore(settings.resolved_database_url())
    service = JobService(store, settings)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
            # the edge refuses both, naming the image, and stores nothing
            for data in (fake_png(), bomb_png()):
                r = await api.post("/v1/jobs", json=_img2img(data))
                assert r.status_code == 422, r.text
                assert r.json()["error"]["field"].startswith("params.init_images"), r.text
            assert (await api.get("/v1/jobs")).json()["jobs"] == []

            # past the edge: two bad rows first in line, then 200 plain jobs
            bad = await service.submit(
                "local",
                [
                    JobRequest(
                        kind=JobKind.IMG2IMG,
                        spec=GenerationSpec(
                            prompt="bad", width=64, height=64, steps=2, init_images=[_data_url(data)]
                        ),
                        priority=10,
                    )
                    for data in (fake_png(), bomb_png())
                ],
            )
            bad_ids = [s.job.id for s in bad]
            plain = [
                {"params": {"prompt": f"p{i}", "width": 64, "height": 64, "steps": 2}} for i in range(PLAIN)
            ]
            r = await api.post("/v1/jobs", json={"jobs": plain})
            assert r.status_code == 201, r.text
            plain_ids = [j["id"] for j in r.json()["jobs"]]
            assert len(plain_ids) == PLAIN

            for _ in range(3):
                await pool.start(FakeEngine(step_seconds=0.0), prefetch=2)

            async def all_done() -> bool:
                jobs = (await api.get("/v1/admin/stats")).json()["jobs"]
                return int(jobs.get("succeeded", 0)) + int(jobs.get("failed", 0)) >= PLAIN + 2

            await wait_until(all_done, timeout=60, what="every job to finish")
            stats = (await api.get("/v1/admin/stats")).json()["jobs"]
            workers = (await api.get("/v1/admin/workers")).json()["workers"]
            views = {i: (await api.get(f"/v1/jobs/{i}")).json() for i in bad_ids}
        assert stats.get("succeeded") == PLAIN and stats.get("failed") == 2, stats
        for job_id in plain_ids[:: PLAIN // 10]:
            view = await api_check(server.url, job_id)
            assert view["state"] == "succeeded" and view["outputs"], view
        assert len(workers) == 3 and all(w["state"] == "active" for w in workers), workers
        assert all(w["quarantined_until"] is None for w in workers), workers
        assert sum(w["jobs_failed"] for w in workers) <= 2, workers
        for view in views.values():
            assert view["state"] == JobState.FAILED.value, view
            assert view["error"]["code"] == "invalid_input", view
            assert "init_images" in view["error"]["message"], view
            assert view["failures"] <= 1, view  # failed once: not retried fleet-wide
        assert (
            "bomb" in views[bad_ids[1]]["error"]["message"]
            or "pixels" in views[bad_ids[1]]["error"]["message"]
        )
    finally:
        await pool.stop()
        await store.close()
        await server.astop()
    print(f"bad-inputs fleet: {PLAIN + 2} jobs in {time.monotonic() - started:.1f} s")
