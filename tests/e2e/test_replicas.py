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
from tests.support import free_port, wait_until
from tests.support.services import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]


class Cluster:
    """Orchestrator replicas as real processes on one PostgreSQL database and one bucket."""

    def __init__(self, tmp_path: Path, postgres_url: str, s3_server: S3Server, **extra_env: str):
        name = f"r_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "SDFLEET_DATABASE_URL": postgres_url.rsplit("/", 1)[0] + "/" + name,
            "SDFLEET_BLOB_URL": s3_server.url(f"replicas-{name}"),
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            "SDFLEET_AUTO_MIGRATE": "false",
            "SDFLEET_SECRET_KEY": "shared-secret",
            "SDFLEET_LOG_LEVEL": "warning",
            **extra_env,
        }
        self.cli("migrate")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: list[int] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sdfleet", *args], env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def start(self, index: int) -> str:
        while len(self.ports) <= index:
            self.ports.append(free_port())
        port = self.ports[index]
        self.procs[index] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdfleet",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(self.tmp_path / f"replica{index}"),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.tmp_path / f"replica{index}.log").open("ab"),
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=1).status_code == 200, 60, f"replica {url}")
        return url

    def kill(self, index: int) -> None:
        self.procs[index].kill()
        self.procs[index].wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            p.wait(20)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, s3_server: S3Server) -> Iterator[tuple[str, str]]:
    cluster = Cluster(tmp_path, postgres_url, s3_server, SDFLEET_POLL_SECONDS="20")
    try:
        yield cluster.start(0), cluster.start(1)
    finally:
        cluster.stop()


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


async def test_kill_a_replica_mid_run(tmp_path: Path, postgres_url: str, s3_server: S3Server) -> None:
    cluster = Cluster(
        tmp_path,
        postgres_url,
        s3_server,
        SDFLEET_LEASE_SECONDS="3",
        SDFLEET_HEARTBEAT_SECONDS="0.5",
        SDFLEET_AUTH="required",
    )
    try:
        worker_key = cluster.cli("keys", "create", "--scope", "worker", "--tenant", "fleet").strip()
        alice = {"Authorization": "Bearer " + cluster.cli("keys", "create", "--tenant", "alice").strip()}
        bob = {"Authorization": "Bearer " + cluster.cli("keys", "create", "--tenant", "bob").strip()}
        a, b = cluster.start(0), cluster.start(1)
        async with httpx.AsyncClient(timeout=30) as http:
            ids: dict[str, dict[str, str]] = {}
            for url, who in ((a, alice), (b, bob)):
                body = {
                    "jobs": [
                        {"params": {"prompt": f"p{i}", "width": 64, "height": 64, "steps": 8}}
                        for i in range(60)
                    ]
                }
                r = await http.post(f"{url}/v1/jobs", json=body, headers=who)
                assert r.status_code == 201, r.text
                ids.update({j["id"]: who for j in r.json()["jobs"]})

            def worker(server: str, name: str) -> Worker:
                settings = WorkerSettings(
                    server=server, token=worker_key, name=name, engine="fake", claim_wait=2
                )
                return Worker(settings, FakeEngine(step_seconds=0.01))

            workers = [worker(a, "on-a-1"), worker(a, "on-a-2"), worker(b, "on-b-1"), worker(b, "on-b-2")]
            runs = [asyncio.create_task(w.run()) for w in workers]

            async def done_count() -> int:
                admin_free = (
                    await http.get(f"{a}/v1/jobs", params={"state": "succeeded", "limit": 500}, headers=alice)
                ).json()["jobs"]
                other = (
                    await http.get(f"{a}/v1/jobs", params={"state": "succeeded", "limit": 500}, headers=bob)
                ).json()["jobs"]
                return len(admin_free) + len(other)

            for _ in range(300):
                if await done_count() >= 30:
                    break
                await asyncio.sleep(0.1)
            cluster.kill(1)  # replica B dies; its workers lose their server
            for _ in range(900):
                if await done_count() == 120:
                    break
                await asyncio.sleep(0.2)
            assert await done_count() == 120
            for w in workers[:2]:
                await w.stop()
            for w in workers[2:]:
                w.request_stop()
                w.request_stop()  # B is gone: do not wait for a grace period
            await asyncio.wait(runs, timeout=30)

            b = cluster.start(1)  # back again: both replicas serve every tenant's jobs
            for job_id, who in ids.items():
                for url in (a, b):
                    job = (await http.get(f"{url}/v1/jobs/{job_id}", headers=who)).json()
                    assert job["state"] == "succeeded"
                    assert len(job["outputs"]) == 1
                stranger = bob if who is alice else alice
                r = await http.get(
                    f"{b}/v1/jobs/{job_id}/outputs/0", headers=stranger, follow_redirects=False
                )
                assert r.status_code == 404
            sample = (await http.get(f"{b}/v1/jobs/{next(iter(ids))}", headers=alice)).json()
            assert sample["outputs"][0]["url"].startswith(s3_server.endpoint)
            assert (await http.get(sample["outputs"][0]["url"])).status_code == 200
    finally:
        cluster.stop()
