"""`sdfleet up --engine fake` as real processes: 200 jobs, a worker killed with SIGKILL and the
orchestrator killed and restarted mid-run. Every job must succeed with exactly its outputs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_until

pytestmark = pytest.mark.slow


def _done_count(client: httpx.Client) -> int:
    r = client.get("/v1/admin/stats", timeout=2)
    r.raise_for_status()
    jobs = r.json()["jobs"]
    return int(jobs.get("succeeded", 0) + jobs.get("failed", 0) + jobs.get("canceled", 0))


def test_up_survives_worker_and_orchestrator_kills(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "SDFLEET_LEASE_SECONDS": "3",
        "SDFLEET_HEARTBEAT_SECONDS": "0.5",
        "SDFLEET_REAPER_INTERVAL": "0.2",
        "SDFLEET_LOG_LEVEL": "warning",
    }
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdfleet",
            "up",
            "--engine",
            "fake",
            "--port",
            str(port),
            "--workers",
            "3",
            "--data-dir",
            str(data),
            "--fake-step-seconds",
            "0.01",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state_file = data / "run" / "processes.json"
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: state_file.exists(), 60, "sdfleet up to start")
        client = httpx.Client(base_url=base, timeout=10)
        expected: dict[str, int] = {}
        for batch in range(4):
            jobs = [
                {
                    "params": {
                        "prompt": f"job {batch}-{i}",
                        "width": 64,
                        "height": 64,
                        "steps": 6,
                        "batch_size": 1 + (i % 2),
                        "seed": i,
                    }
                }
                for i in range(50)
            ]
            r = client.post("/v1/jobs", json={"jobs": jobs})
            assert r.status_code == 201, r.text
            for j in r.json()["jobs"]:
                expected[j["id"]] = j["params"]["batch_size"] * j["params"]["n_iter"]
        assert len(expected) == 200

        state = json.loads(state_file.read_text())
        wait_until(lambda: _done_count(client) >= 40, 60, "40 jobs done")
        os.kill(state["workers"]["worker-1"], signal.SIGKILL)
        wait_until(lambda: _done_count(client) >= 100, 60, "100 jobs done")
        os.kill(state["orchestrator"], signal.SIGKILL)
        wait_until(lambda: _done_count(client) == 200, 120, "all 200 jobs finished")

        restarts = json.loads(state_file.read_text())["restarts"]
        assert restarts["orchestrator"] >= 1
        assert restarts["worker-1"] >= 1
        listed: list[dict[str, object]] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/jobs", params={"limit": 500, **({"cursor": cursor} if cursor else {})}
            ).json()
            listed += page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert {j["id"] for j in listed} == set(expected)
        states = {j["state"] for j in listed}
        assert states == {"succeeded"}, [
            (j["id"], j["state"], j["error"]) for j in listed if j["state"] != "succeeded"
        ]
        for j in listed:
            assert sorted(o["index"] for o in j["outputs"]) == list(range(expected[j["id"]]))  # type: ignore[union-attr, index]
        with sqlite3.connect(data / "sdfleet.db") as db:
            assert db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == sum(expected.values())
            per_job = db.execute(
                "SELECT job_id, COUNT(*) FROM attempts WHERE outcome='succeeded' GROUP BY job_id"
            ).fetchall()
            assert len(per_job) == 200
            assert all(n == 1 for _, n in per_job)
            interrupted = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome='interrupted'").fetchone()[
                0
            ]
        # the killed worker held jobs whose leases had to expire
        assert interrupted >= 1
        # every stored output file exists
        blobs = data / "blobs"
        assert sum(1 for p in blobs.rglob("*.png")) >= sum(expected.values())
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        stderr = up.stderr.read().decode() if up.stderr else ""
    assert code == 0, stderr[-3000:]
