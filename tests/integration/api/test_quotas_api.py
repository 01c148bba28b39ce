"""Quotas over HTTP: 429 with Retry-After and RateLimit-* on /v1, A1111's envelope on /sdapi, the
admin's tenants endpoints, the account's remaining quota, the per-address limit, the CLI."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from sdfleet.api.app import create_app
from sdfleet.config import Settings
from tests.integration.api.conftest import MakeClient, create_key, with_overrides

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}
TIGHT = {"quotas": {"rate": 0.01, "burst": 2, "max_concurrent": None}}


def test_over_the_rate_a_submit_is_429_with_retry_after(make_client: MakeClient) -> None:
    client = make_client(**TIGHT)
    assert client.post("/v1/jobs", json={"jobs": [TXT, TXT]}).status_code == 201
    r = client.post("/v1/jobs", json=TXT)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "100"  # one job at 0.01 per second
    assert r.headers["RateLimit-Limit"] == "2" and r.headers["RateLimit-Remaining"] == "0"
    assert int(r.headers["RateLimit-Reset"]) == 200
    error = r.json()["error"]
    assert (
        error["code"] == "rate_limited" and error["field"] == "jobs" and error["details"]["limit"] == "rate"
    )
    assert len(client.get("/v1/jobs").json()["jobs"]) == 2  # the refused submit stored nothing


def test_a1111_routes_keep_their_envelope_on_429(make_client: MakeClient) -> None:
    client = make_client(**TIGHT)
    assert client.post("/v1/jobs", json={"jobs": [TXT, TXT]}).status_code == 201  # the same tenant
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 429 and "Retry-After" in r.headers
    body = r.json()
    assert body["error"] == "RateLimited" and "jobs per second" in body["detail"]
    assert set(body) == {"error", "detail", "body", "errors"}


def test_account_shows_what_is_left(make_client: MakeClient) -> None:
    client = make_client(quotas={"rate": 0.01, "burst": 5, "max_concurrent": 10, "gpu_seconds_per_day": 100})
    before = client.get("/v1/account").json()["quota"]
    assert before["rate"]["available"] == 5 and before["concurrent"] == {
        "limit": 10,
        "live": 0,
        "available": 10,
    }
    assert before["gpu_seconds"]["available"] == 100
    client.post("/v1/jobs", json={"jobs": [TXT, TXT]})
    after = client.get("/v1/account").json()["quota"]
    assert after["rate"]["available"] < 3.1 and after["concurrent"]["available"] == 8
    assert after["gpu_seconds"]["available"] < 100


def test_admin_sets_a_tenants_limits(make_client: MakeClient) -> None:
    client = make_client(auth="required")
    admin = create_key(client, "ops", "admin")
    user = create_key(client, "acme", "user")
    r = client.patch(
        "/v1/admin/tenants/acme", json={"burst": 1, "rate": 0.5, "gpu_seconds_per_day": None}, headers=admin
    )
    assert r.status_code == 200, r.text
    quota = r.json()["quota"]
    assert quota["custom"] == ["burst", "gpu_seconds_per_day", "rate"] and quota["rate"]["burst"] == 1
    assert client.post("/v1/jobs", json=TXT, headers=user).status_code == 201
    assert client.post("/v1/jobs", json=TXT, headers=user).status_code == 429
    listed = client.get("/v1/admin/tenants", headers=admin).json()
    acme = next(t for t in listed["tenants"] if t["id"] == "acme")
    assert acme["limits"]["burst"] == 1 and listed["defaults"]["burst"] == 5000
    assert client.get("/v1/admin/tenants/acme", headers=admin).json()["quota"]["rate"]["available"] < 1
    back = client.patch("/v1/admin/tenants/acme", json={"burst": "default", "rate": "default"}, headers=admin)
    assert back.json()["quota"]["custom"] == ["gpu_seconds_per_day"]
    assert client.post("/v1/jobs", json=TXT, headers=user).status_code == 201
    # bad limits are 422 naming the field; users cannot reach the endpoints
    for bad, field in (({"rate": -1}, "rate"), ({"burst": None}, "burst"), ({"nope": 1}, "nope")):
        r = client.patch("/v1/admin/tenants/acme", json=bad, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    r = client.patch(
        "/v1/admin/tenants/acme",
        content=b'{"weight": Infinity}',
        headers={**admin, "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "weight", r.text
    assert client.get("/v1/admin/tenants", headers=user).status_code == 403
    assert client.patch("/v1/admin/tenants/acme", json={"rate": 9}, headers=user).status_code == 403


def test_per_address_limit_stops_anonymous_floods(settings: Settings) -> None:
    s = with_overrides(settings, ip_limit={"rate": 0.01, "burst": 3})
    with TestClient(create_app(s), raise_server_exceptions=False, client=("203.0.113.7", 4000)) as client:
        assert [client.get("/health").status_code for _ in range(3)] == [200] * 3
        r = client.get("/health")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) == 100
        assert r.json()["error"]["code"] == "rate_limited"
        assert client.get("/sdapi/v1/samplers").json()["error"] == "RateLimited"
        # a caller with a key is held to its tenant's quotas instead
        key = create_key(client, "local", "user")
        assert client.get("/v1/account", headers=key).status_code == 200
    with TestClient(create_app(s), client=("127.0.0.1", 4000)) as local:
        assert all(local.get("/health").status_code == 200 for _ in range(5))  # loopback is exempt


def test_cli_sets_and_shows_tenant_limits(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from sdfleet.cli import app

    db = ["--database-url", f"sqlite:///{tmp_path}/cli.db"]
    runner = CliRunner()
    r = runner.invoke(
        app, ["tenants", "set", "acme", "--rate", "2", "--max-concurrent", "unlimited", "--weight", "3", *db]
    )
    assert r.exit_code == 0, r.output
    assert "rate: 2 (own)" in r.output and "max_concurrent: unlimited (own)" in r.output
    shown = json.loads(runner.invoke(app, ["tenants", "show", "acme", *db]).output)
    assert shown["weight"] == 3 and shown["rate"]["per_second"] == 2 and shown["concurrent"]["limit"] is None
    listed = runner.invoke(app, ["tenants", "list", *db], terminal_width=200)
    assert "acme" in listed.output and "3*" in listed.output
    r = runner.invoke(app, ["tenants", "set", "acme", "--rate", "default", *db])
    assert "rate: 50" in r.output and "rate: 50 (own)" not in r.output
    bad = runner.invoke(app, ["tenants", "set", "acme", "--rate", "fast", *db])
    assert bad.exit_code == 2 and "--rate" in bad.output
    bad = runner.invoke(app, ["tenants", "set", "acme", "--burst", "0", *db])
    assert bad.exit_code == 2 and "burst" in bad.output
