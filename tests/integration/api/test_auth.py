"""Keys, scopes and tenants: who may reach what."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from sdfleet.config import Settings
from sdfleet.errors import ConfigError
from tests.integration.api.conftest import MakeClient, create_key, ctx_of, run_one_job_as_worker

TXT = {"params": {"prompt": "x", "width": 64, "height": 64}}


@pytest.fixture
def secured(make_client: MakeClient) -> TestClient:
    return make_client(auth="required")


def test_keys_required_when_auth_is_on(secured: TestClient) -> None:
    r = secured.get("/v1/jobs")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert secured.get("/v1/jobs", headers={"Authorization": "Bearer sdf_nope"}).status_code == 401
    assert secured.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    assert secured.get("/health").status_code == 200


def test_worker_token_cannot_submit_and_user_key_cannot_claim(secured: TestClient) -> None:
    worker = create_key(secured, "fleet", "worker")
    user = create_key(secured, "t1", "user")
    r = secured.post("/v1/jobs", json=TXT, headers=worker)
    assert r.status_code == 403
    assert "worker tokens" in r.json()["error"]["message"]
    assert secured.get("/v1/admin/workers", headers=worker).status_code == 403
    assert secured.post("/v1/worker/register", json={"name": "x"}, headers=user).status_code == 403
    assert secured.get("/v1/admin/workers", headers=user).status_code == 403
    assert secured.post("/v1/jobs", json=TXT, headers=user).status_code == 201


def test_tenants_see_only_their_own_jobs_and_outputs(secured: TestClient) -> None:
    a = create_key(secured, "tenant-a", "user")
    b = create_key(secured, "tenant-b", "user")
    admin = create_key(secured, "ops", "admin")
    worker = create_key(secured, "fleet", "worker")
    job = secured.post("/v1/jobs", json=TXT, headers=a).json()
    run_one_job_as_worker(secured, worker)
    assert secured.get(f"/v1/jobs/{job['id']}", headers=a).json()["state"] == "succeeded"
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/outputs/0", f"/v1/jobs/{job['id']}/events"):
        r = secured.get(path, headers=b, follow_redirects=False)
        assert r.status_code == 404, path
    assert secured.post(f"/v1/jobs/{job['id']}/cancel", headers=b).status_code == 404
    assert secured.get("/v1/jobs", headers=b).json()["jobs"] == []
    assert [j["id"] for j in secured.get("/v1/jobs", headers=admin).json()["jobs"]] == [job["id"]]
    assert secured.get(f"/v1/jobs/{job['id']}", headers=admin).status_code == 200


def test_revoked_key_stops_working(secured: TestClient) -> None:
    ctx = ctx_of(secured)
    created = secured.portal.call(ctx.keys.create, "t1", ["user"])  # type: ignore[union-attr]
    h = {"Authorization": f"Bearer {created.secret}"}
    assert secured.get("/v1/jobs", headers=h).status_code == 200
    secured.portal.call(ctx.keys.revoke, created.record.id)  # type: ignore[union-attr]
    assert secured.get("/v1/jobs", headers=h).status_code == 401


def test_keys_are_stored_hashed(secured: TestClient) -> None:
    ctx = ctx_of(secured)
    created = secured.portal.call(ctx.keys.create, "t1", ["user"])  # type: ignore[union-attr]
    with sqlite3.connect(ctx.settings.data_dir / "sdfleet.db") as db:
        rows = [repr(r) for r in db.execute("SELECT * FROM api_keys")]
    assert not any(created.secret in r for r in rows)
    assert any(created.record.key_hash in r for r in rows)


def test_public_bind_without_auth_is_refused(settings: Settings) -> None:
    from sdfleet.api.app import create_app

    with pytest.raises(ConfigError, match="refusing"):
        create_app(settings.model_copy(update={"host": "0.0.0.0", "auth": "off"}))
    app = create_app(settings.model_copy(update={"host": "0.0.0.0"}))
    with pytest.raises(ConfigError, match="without API keys"), TestClient(app):
        pass
