"""An orchestrator app under FastAPI's TestClient (real SQLite, real blob dir, real lifespan)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from sdfleet.api.app import create_app
from sdfleet.api.deps import AppContext
from sdfleet.config import Settings
from sdfleet.store import JobStore

MakeClient = Callable[..., TestClient]


def with_overrides(settings: Settings, **overrides: object) -> Settings:
    """A validated copy of ``settings``; dict values merge into nested settings (``limits``)."""
    data = settings.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return Settings.model_validate(data)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[MakeClient]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        s = with_overrides(settings, **overrides)
        client = TestClient(create_app(s), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def ctx_of(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


def store_of(client: TestClient) -> JobStore:
    """The app's job store, for tests that look at rows no route shows (routes reach it through services)."""
    store: JobStore = client.app.state.store  # type: ignore[attr-defined]
    return store


def create_key(client: TestClient, tenant: str, *scopes: str) -> dict[str, str]:
    created = client.portal.call(ctx_of(client).keys.create, tenant, list(scopes))  # type: ignore[union-attr]
    return {"Authorization": f"Bearer {created.secret}"}


def run_one_job_as_worker(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, object]:
    """Register a worker, claim one job, upload its outputs, complete it. Returns the claim item."""
    h = headers or {}
    wid = client.post("/v1/worker/register", json={"name": "test-worker"}, headers=h).json()["worker_id"]
    claim = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 1}, headers=h).json()
    [job] = claim["jobs"]
    outputs = []
    for up in job["uploads"]:
        r = client.put(up["url"], content=b"\x89PNG fake bytes")
        assert r.status_code == 201, r.text
        outputs.append({"index": up["index"], "key": up["key"], "seed": 7, "infotext": "x"})
    r = client.post(
        "/v1/worker/complete",
        json={
            "worker_id": wid,
            "job_id": job["job_id"],
            "epoch": job["epoch"],
            "outputs": outputs,
            "engine_seconds": 1.5,
        },
        headers=h,
    )
    assert r.status_code == 200, r.text
    return {"worker_id": wid, **job}
