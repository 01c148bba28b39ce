"""Fixtures of the A1111 API tests: a live orchestrator with FakeEngine workers (requests really flow
through the queue), or a TestClient app for what needs no worker; checkpoints in the registry; images."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdfleet.api.app import create_app
from sdfleet.config import Settings
from tests.integration.api.conftest import with_overrides
from tests.support.live import Orchestrator, WorkerPool, make_settings

BASIC_USERS = tuple(f"user{i}" for i in range(40))
BASIC_PASSWORD = "secret"
_next_user = itertools.count()


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    """One live orchestrator per test module (starting one costs about a second). Tests keep apart by
    calling the A1111 routes as different Basic users, so each has its own tenant, options and requests."""
    users = ",".join(f"{user}:{BASIC_PASSWORD}" for user in BASIC_USERS)
    orch = Orchestrator(make_settings(tmp_path_factory.mktemp("live"), a1111_api_auth=users))
    orch.start()
    # Basic users are tenants, so the native API is not open: workers and the admin use keys
    orch.admin_key = orch.create_key("ops", "admin")  # type: ignore[attr-defined]
    orch.worker_token = orch.create_key("fleet", "worker")  # type: ignore[attr-defined]
    try:
        yield orch
    finally:
        orch.stop()


@pytest.fixture
def basic_user() -> str:
    """A Basic user (so a tenant) no other test of the module uses."""
    return BASIC_USERS[next(_next_user) % len(BASIC_USERS)]


@pytest.fixture
async def api(orchestrator: Orchestrator, basic_user: str) -> AsyncIterator[httpx.AsyncClient]:
    """An A1111 client of the live orchestrator, as this test's own Basic user."""
    async with httpx.AsyncClient(
        base_url=orchestrator.url, timeout=30, auth=(basic_user, BASIC_PASSWORD)
    ) as client:
        yield client


@pytest.fixture
async def admin(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the native API with an admin key: the registry, every job."""
    headers = {"Authorization": f"Bearer {orchestrator.admin_key}"}  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture
async def workers(orchestrator: Orchestrator) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(orchestrator.url, orchestrator.worker_token)  # type: ignore[attr-defined]
    yield pool
    await pool.stop()


NO_WORKER_TIMEOUT = 3.0
"""Without workers a generation call would wait for one: it gives up (504) after this many seconds."""


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app under TestClient, no workers: for lists, options, auth and refusals."""
    app = create_app(with_overrides(settings, a1111_request_timeout=NO_WORKER_TIMEOUT))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        values: dict[str, object] = {"a1111_request_timeout": NO_WORKER_TIMEOUT, **overrides}
        app = create_app(with_overrides(settings, **values))
        test_client = TestClient(app, raise_server_exceptions=False)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


def checkpoint_body(tmp_path: Path, name: str, kind: str = "checkpoint") -> dict[str, Any]:
    """A registry entry for a small local file (the FakeEngine never reads it)."""
    path = tmp_path / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"weights of {name}".encode())
    return {"name": name, "kind": kind, "arch": "sd1", "source": str(path)}


def title_of(name: str) -> str:
    """A1111's title of a checkpoint registered by :func:`checkpoint_body`."""
    return f"{name} [{hashlib.sha256(f'weights of {name}'.encode()).hexdigest()[:10]}]"


def png_b64(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    image.load()
    return image
