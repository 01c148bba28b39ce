"""Auth hardening (issue 14): keyless loopback ends once keys exist, A1111 Basic users stay private,
the Host header is checked (DNS rebinding), no cross-site simple writes, /metrics behind a key, and
the event stream's key in a header only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sdfleet.cli.serve import _local_worker_token
from sdfleet.config import Settings
from tests.integration.api.conftest import MakeClient, create_key, ctx_of, run_one_job_as_worker, store_of

TXT = {"params": {"prompt": "x", "width": 64, "height": 64}}


def _revoke_all(client: TestClient) -> None:
    ctx = ctx_of(client)
    for record in client.portal.call(ctx.keys.list):  # type: ignore[union-attr]
        if record.revoked_at is None:
            client.portal.call(ctx.keys.revoke, record.id)  # type: ignore[union-attr]


# ===================================================================== keyless loopback


def test_keyless_loopback_is_admin_only_until_a_user_or_admin_key_exists(client: TestClient) -> None:
    assert client.get("/v1/admin/workers").status_code == 200  # single-user box: keyless is the admin
    worker = create_key(client, "fleet", "worker")
    assert client.get("/v1/jobs").status_code == 200  # worker keys alone keep the box open
    user = create_key(client, "alice", "user")
    for method, path in (
        ("GET", "/v1/jobs"),
        ("GET", "/v1/admin/workers"),
        ("GET", "/v1/account"),
        ("GET", "/sdapi/v1/sd-models"),
        ("POST", "/v1/worker/register"),
    ):
        r = client.request(method, path, json={"name": "w"} if method == "POST" else None)
        assert r.status_code == 401, path
    r = client.post("/v1/jobs", json=TXT)
    assert r.status_code == 401
    assert "this server has API keys" in r.json()["error"]["message"]
    assert client.get("/sdapi/v1/sd-models", auth=("any", "thing")).status_code == 401
    # the keys themselves work, each held to its scopes
    assert client.post("/v1/jobs", json=TXT, headers=user).status_code == 201
    assert client.get("/v1/admin/workers", headers=user).status_code == 403
    assert client.post("/v1/worker/register", json={"name": "w"}, headers=worker).status_code == 200
    assert client.get("/v1/jobs").status_code == 401
    _revoke_all(client)
    assert client.get("/v1/jobs").status_code == 200  # no keys left: open again


def test_an_admin_key_closes_the_box_too(client: TestClient) -> None:
    admin = create_key(client, "ops", "admin")
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/admin/workers", headers=admin).status_code == 200


def test_a_key_created_by_another_process_closes_the_box_within_seconds(client: TestClient) -> None:
    from sdfleet.jobs.keys import _USER_KEYS_CACHE_SECONDS, KeyService

    assert client.get("/v1/jobs").status_code == 200
    other = KeyService(store_of(client))  # like `sdfleet keys create` next to the running server
    client.portal.call(other.create, "alice", ["user"])  # type: ignore[union-attr]
    deadline = time.monotonic() + _USER_KEYS_CACHE_SECONDS + 1.0
    while client.get("/v1/jobs").status_code != 401:
        assert time.monotonic() < deadline, "keyless calls still accepted"
        time.sleep(0.1)


def test_a1111_basic_users_jobs_are_not_readable_without_credentials(make_client: MakeClient) -> None:
    client = make_client(a1111_api_auth="alice:wonder", a1111_request_timeout=0.2)
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "secret", "steps": 1}, auth=("alice", "wonder"))
    assert r.status_code == 504  # no worker: it gave up, but the job is stored under alice's tenant
    [job] = client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant="a1111-alice"))  # type: ignore[union-attr]
    for path in ("/v1/jobs", f"/v1/jobs/{job.id}", f"/v1/jobs/{job.id}/events", "/v1/admin/workers"):
        assert client.get(path).status_code == 401, path
    assert client.post(f"/v1/jobs/{job.id}/cancel", json={}).status_code == 401
    admin = create_key(client, "ops", "admin")
    assert client.get(f"/v1/jobs/{job.id}", headers=admin).json()["labels"]["api"] == "a1111"


# ===================================================================== the Host header


def test_the_host_header_must_name_this_server(make_client: MakeClient) -> None:
    client = make_client()
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "localhost.evil.example"):
        r = client.get("/v1/jobs", headers={"host": host})
        assert r.status_code == 400, host
        assert r.json()["error"]["code"] == "invalid_host"
        assert "allowed_hosts" in r.json()["error"]["message"]
    r = client.get("/sdapi/v1/sd-models", headers={"host": "evil.example"})
    assert r.status_code == 400 and r.json()["error"] == "InvalidHost"  # A1111's envelope there
    for host in ("localhost:7860", "127.0.0.1:7860", "[::1]:7860", "app.localhost", "LOCALHOST"):
        assert client.get("/v1/jobs", headers={"host": host}).status_code == 200, host
    assert client.get("/health", headers={"host": "10.1.2.3:7860"}).status_code == 200  # probes by address
    assert client.get("/ready", headers={"host": "10.1.2.3:7860"}).status_code == 200


def test_testserver_is_not_allowed_by_default(make_client: MakeClient) -> None:
    client = make_client(allowed_hosts=[])
    assert client.get("/v1/jobs").status_code == 400


def test_allowed_hosts_and_public_url_add_names(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(allowed_hosts=["testserver", "*.example.com"], public_url="https://sd.example.org/")
    for host in ("sd.example.com", "a.b.example.com:443", "sd.example.org"):
        assert client.get("/v1/jobs", headers={"host": host}).status_code == 200, host
    for host in ("example.com", "sd.example.com.evil.net", "example.org"):
        assert client.get("/v1/jobs", headers={"host": host}).status_code == 400, host
    monkeypatch.setenv("SDFLEET_ALLOWED_HOSTS", "A.example, *.b.example")
    assert Settings().allowed_hosts == ["a.example", "*.b.example"]
    with pytest.raises(ValueError, match="allowed_hosts"):
        Settings(allowed_hosts=["http://a.example/"])


def test_any_host_on_a_public_bind_unless_names_are_configured() -> None:
    assert Settings(host="0.0.0.0").host_names()[2] is True
    exact, _, anything = Settings(host="0.0.0.0", allowed_hosts=["sd.example.com"]).host_names()
    assert not anything and {"sd.example.com", "127.0.0.1"} <= exact
    assert Settings(host="127.0.0.1").host_names()[2] is False
    assert Settings(allowed_hosts=["*"]).host_names()[2] is True


# ===================================================================== cross-site writes


def test_keyless_writes_need_a_json_body_and_no_foreign_origin(client: TestClient) -> None:
    body = json.dumps(TXT)
    for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"):
        r = client.post("/v1/jobs", content=body, headers={"content-type": content_type})
        assert r.status_code == 415, content_type
        assert r.json()["error"]["code"] == "unsupported_media_type"
        assert "application/json" in r.json()["error"]["message"]
    r = client.post("/v1/jobs", files={"f": ("a.json", body, "application/json")})  # multipart
    assert r.status_code == 415
    r = client.post(
        "/sdapi/v1/options",
        content=b'{"CLIP_stop_at_last_layers": 4}',
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 415 and r.json()["error"] == "UnsupportedMediaType"
    # a browser's body without a type (a Blob), from a page
    r = client.post("/v1/jobs", content=body, headers={"origin": "http://testserver"})
    assert r.status_code == 415
    # another origin, even with JSON (and an empty body: cancel)
    r = client.post("/v1/jobs", json=TXT, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
    assert client.post("/v1/jobs", json=TXT, headers={"origin": "null"}).status_code == 403
    assert (
        client.post("/v1/jobs/j_nope/cancel", headers={"origin": "http://localhost:1234"}).status_code == 403
    )
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing of the above was stored
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
    # what the page and scripts send passes
    assert client.post("/v1/jobs", json=TXT, headers={"origin": "http://testserver"}).status_code == 201
    assert client.post("/v1/jobs", content=body).status_code == 201  # a script, no Origin, no type
    assert client.post("/v1/jobs", json=TXT).status_code == 201


def test_writes_with_a_key_in_a_header_are_not_held_to_it(make_client: MakeClient) -> None:
    client = make_client(auth="required", a1111_api_auth="alice:wonder")
    user = create_key(client, "t1", "user")
    body = json.dumps(TXT)
    r = client.post(
        "/v1/jobs", content=body, headers={**user, "content-type": "text/plain", "origin": "http://x.example"}
    )
    assert r.status_code != 415 and r.status_code != 403
    x_api_key = {"x-api-key": user["Authorization"].removeprefix("Bearer ")}
    assert (
        client.post("/v1/jobs", json=TXT, headers={**x_api_key, "origin": "http://x.example"}).status_code
        == 201
    )
    # a browser sends cached Basic credentials by itself: they are no defence
    r = client.post(
        "/sdapi/v1/options", content=b"{}", headers={"content-type": "text/plain"}, auth=("alice", "wonder")
    )
    assert r.status_code == 415


def test_signed_uploads_take_raw_bytes(client: TestClient) -> None:
    client.post("/v1/jobs", json=TXT)
    run_one_job_as_worker(client)  # PUTs to the signed URL with no content type, no key


# ===================================================================== /metrics


def test_metrics_need_an_admin_or_metrics_key_once_keys_exist(make_client: MakeClient) -> None:
    client = make_client()
    assert client.get("/metrics").status_code == 200  # open box
    user = create_key(client, "t1", "user")
    admin = create_key(client, "ops", "admin")
    metrics = create_key(client, "prometheus", "metrics")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=user).status_code == 403
    r = client.get("/metrics", headers=metrics)
    assert r.status_code == 200 and "sdfleet_" in r.text
    assert client.get("/metrics", headers=admin).status_code == 200
    assert client.get("/v1/jobs", headers=metrics).status_code == 403  # a metrics key reaches nothing else
    public = make_client(public_metrics=True)
    assert public.get("/metrics").status_code == 200


# ===================================================================== event stream


def _events(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "event" in fields:
            out.append((fields["id"], fields["event"]))
    return out


def test_the_event_stream_takes_its_key_in_a_header_only(make_client: MakeClient) -> None:
    client = make_client(auth="required")
    user = create_key(client, "t1", "user")
    worker = create_key(client, "fleet", "worker")
    job = client.post("/v1/jobs", json=TXT, headers=user).json()
    run_one_job_as_worker(client, worker)
    secret = user["Authorization"].removeprefix("Bearer ")
    r = client.get(f"/v1/jobs/{job['id']}/events", params={"api_key": secret})
    assert r.status_code == 422 and r.json()["error"]["field"] == "api_key"
    r = client.get(f"/v1/jobs/{job['id']}/events", params={"api_key": secret}, headers=user)
    assert r.status_code == 422  # never silently accepted, even beside a header
    r = client.get(f"/v1/jobs/{job['id']}/events", headers=user)
    assert r.status_code == 200
    events = _events(r.text)
    assert events[0][1] == "queued" and events[-1][1] == "finished"
    # Last-Event-ID resumes after that event
    resumed = client.get(f"/v1/jobs/{job['id']}/events", headers={**user, "last-event-id": events[1][0]})
    assert _events(resumed.text) == events[2:]


# ===================================================================== sdfleet up's worker token


def test_up_keeps_a_valid_worker_token_and_replaces_a_revoked_one(tmp_path: Path) -> None:
    import asyncio

    from sdfleet.jobs.keys import KeyService
    from sdfleet.store.sql import SqlStore

    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    first = _local_worker_token(settings)
    assert first and (settings.data_dir / "worker_token").stat().st_mode & 0o777 == 0o600
    assert _local_worker_token(settings) == first

    async def check_and_revoke() -> list[str]:
        store = SqlStore(settings.resolved_database_url())
        try:
            keys = KeyService(store)
            principal = await keys.verify(first)
            assert principal.scopes == frozenset({"worker"})
            assert principal.key_id is not None
            await keys.revoke(principal.key_id)
            return [r.id for r in await keys.list()]
        finally:
            await store.close()

    asyncio.run(check_and_revoke())
    second = _local_worker_token(settings)
    assert second != first
    assert (settings.data_dir / "worker_token").read_text() == second
