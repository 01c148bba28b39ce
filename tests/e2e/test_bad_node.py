"""One bad node among good ones: it fails every job it takes, instantly and fatally. The fleet's
work must still succeed (≥ 99.9%), and the bad node must end up quarantined with the failures it
caused given back to the jobs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdfleet.config import WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.worker.runner import Worker
from tests.support import free_port, wait_until

pytestmark = pytest.mark.slow

JOBS = 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SDFLEET_DATA_DIR": str(tmp_path / "data"),
        "SDFLEET_PORT": str(port),
        "SDFLEET_HEARTBEAT_SECONDS": "0.5",
        "SDFLEET_QUARANTINE_FAILURES": "3",
        "SDFLEET_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdfleet", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=1).status_code == 200, 30, "the server")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


async def test_one_always_failing_worker_does_not_fail_the_fleet(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as api:
        for start in range(0, JOBS, 500):
            jobs = [
                {"params": {"prompt": f"p{i}", "width": 64, "height": 64, "steps": 2}}
                for i in range(start, start + 500)
            ]
            assert (await api.post("/v1/jobs", json={"jobs": jobs})).status_code == 201

        def settings(name: str) -> WorkerSettings:
            return WorkerSettings(server=server, name=name, engine="fake", claim_wait=2, prefetch=2)

        bad = Worker(settings("bad-node"), FakeEngine(step_seconds=0, fail_every=1, fail_with="fatal"))
        good = [Worker(settings(f"good-{i}"), FakeEngine(step_seconds=0.0005)) for i in range(4)]
        tasks = [asyncio.create_task(w.run()) for w in [bad, *good]]
        try:

            async def finished() -> int:
                stats = (await api.get("/v1/admin/stats")).json()["jobs"]
                return int(stats.get("succeeded", 0) + stats.get("failed", 0) + stats.get("canceled", 0))

            for _ in range(600):
                if await finished() == JOBS:
                    break
                await asyncio.sleep(0.2)
            stats = (await api.get("/v1/admin/stats")).json()["jobs"]
            workers = {w["name"]: w for w in (await api.get("/v1/admin/workers")).json()["workers"]}
        finally:
            await asyncio.gather(*(w.stop() for w in [bad, *good]))
            await asyncio.gather(*tasks, return_exceptions=True)

    succeeded = stats.get("succeeded", 0)
    assert succeeded / JOBS >= 0.999, stats
    assert workers["bad-node"]["state"] == "quarantined"
    assert "failed 3 distinct jobs" in workers["bad-node"]["quarantine_reason"]
    assert workers["bad-node"]["jobs_done"] == 0
    assert sum(workers[f"good-{i}"]["jobs_done"] for i in range(4)) == succeeded
