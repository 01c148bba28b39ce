"""`sdfleet up` with keys: its local workers get a real worker token in every auth mode, so jobs run with
``SDFLEET_AUTH=required`` and once user keys exist in the default mode (keyless calls are then refused)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sdfleet.config import Settings
from tests.support import free_port, wait_until
from tests.support.live import Orchestrator

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("auth", ["required", "auto"])
def test_up_runs_jobs_when_keys_are_required(tmp_path: Path, auth: str) -> None:
    port = free_port()
    data = tmp_path / "data"
    key = Orchestrator(Settings(data_dir=data)).create_key("alice", "user")
    env = {
        **os.environ,
        "SDFLEET_AUTH": auth,
        "SDFLEET_LOG_LEVEL": "warning",
        "SDFLEET_HEARTBEAT_SECONDS": "0.5",
    }
    argv = [sys.executable, "-m", "sdfleet", "up", "--engine", "fake", "--workers", "1"]
    argv += ["--port", str(port), "--data-dir", str(data), "--fake-step-seconds", "0.01"]
    up = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (data / "run" / "processes.json").exists(), 60, "sdfleet up to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as anonymous:
            wait_until(lambda: anonymous.get("/ready").status_code == 200, 30, "the orchestrator")
            assert anonymous.get("/v1/jobs").status_code == 401
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"authorization": f"Bearer {key}"}
        ) as client:
            job = client.post(
                "/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64, "steps": 3}}
            )
            assert job.status_code == 201, job.text

            def done() -> bool:
                return client.get(f"/v1/jobs/{job.json()['id']}").json()["state"] == "succeeded"

            wait_until(done, 30, "the job to run on up's worker")
            stream = client.get(f"/v1/jobs/{job.json()['id']}/events")
            assert stream.status_code == 200 and "event: finished" in stream.text
        assert (data / "worker_token").stat().st_mode & 0o777 == 0o600
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(timeout=5)
