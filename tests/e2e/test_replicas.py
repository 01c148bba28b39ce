"""The scale-out profile: two orchestrator replicas on one PostgreSQL and one S3 server.

A worker long-polling replica A is woken by a job submitted on replica B (LISTEN/NOTIFY, not the
slow re-check, which is set to 20 s here); an event stream on B follows a job run through A; the
worker uploads straight to the object store and clients get presigned object-store URLs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sdfleet.config import WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.worker.runner import Worker
from tests.services import S3Server
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, s3_server: S3Server) -> Iterator[tuple[str, str]]:
    name = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = postgres_url.rsplit("/", 1)[0] + "/" + name
    env = {
        **os.environ,
        "SDFLEET_DATABASE_URL": db,
        "SDFLEET_BLOB_URL": s3_server.url(f"replicas-{name}"),
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "SDFLEET_POLL_SECONDS": "20",
        "SDFLEET_AUTO_MIGRATE": "false",
        "SDFLEET_SECRET_KEY": "shared-secret",
        "SDFLEET_LOG_LEVEL": "warning",
    }
    subprocess.run([sys.executable, "-m", "sdfleet", "migrate"], env=env, check=True, capture_output=True)
    procs = []
    urls = []
    for i in range(2):
        port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sdfleet",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(tmp_path / f"replica{i}"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_until(
                lambda u=url: httpx.get(f"{u}/ready", timeout=1).status_code == 200, 60, f"replica {url}"
            )
        yield urls[0], urls[1]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)


async def test_replicas_share_work_events_and_storage(replicas: tuple[str, str], s3_server: S3Server) -> None:
    a, b = replicas
    async with httpx.AsyncClient(timeout=30) as http:
        wid = (await http.post(f"{a}/v1/worker/register", json={"name": "probe"})).json()["worker_id"]
        # a long poll on A, woken by a submit on B
        started = time.monotonic()
        poll = asyncio.create_task(
            http.post(f"{a}/v1/worker/claim", json={"worker_id": wid, "max_jobs": 1, "wait": 15})
        )
        await asyncio.sleep(0.5)
        job = (
            await http.post(f"{b}/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64}})
        ).json()
        claim = (await poll).json()
        waited = time.monotonic() - started
        assert [j["job_id"] for j in claim["jobs"]] == [job["id"]]
        assert waited < 8, f"the claim on A waited {waited:.1f}s: no cross-replica wake-up"
        upload = claim["jobs"][0]["uploads"][0]["url"]
        assert upload.startswith(s3_server.endpoint), upload  # straight to the object store
        await http.post(
            f"{a}/v1/worker/release",
            json={"worker_id": wid, "job_id": job["id"], "epoch": claim["jobs"][0]["epoch"]},
        )

        # a real worker on A runs a job; an event stream on B follows it to the end
        second = (
            await http.post(
                f"{b}/v1/jobs", json={"params": {"prompt": "y", "width": 64, "height": 64, "steps": 3}}
            )
        ).json()
        events: list[str] = []

        async def follow() -> None:
            async with http.stream("GET", f"{b}/v1/jobs/{second['id']}/events") as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        events.append(line[7:])

        follower = asyncio.create_task(follow())
        worker = Worker(
            WorkerSettings(server=a, name="replica-a-worker", engine="fake", claim_wait=5),
            FakeEngine(step_seconds=0.01),
        )
        run = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(follower, 12)
        finally:
            await worker.stop()
            await run
        assert events[0] == "queued"
        assert "started" in events
        assert events[-1] == "finished"
        for j in (job["id"], second["id"]):
            done = (await http.get(f"{b}/v1/jobs/{j}")).json()
            assert done["state"] == "succeeded", done
            url = done["outputs"][0]["url"]
            assert url.startswith(s3_server.endpoint), url  # presigned object-store URL, not proxied
            image = await http.get(url)
            assert image.status_code == 200
            assert image.content.startswith(b"\x89PNG")
