"""``GET /v1/fleet/models``: per model, queued and running jobs, warm workers and waits."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.integration.api.conftest import MakeClient, create_key

SHA = "ab" * 32


def test_fleet_models_counts_jobs_and_warm_workers(client: TestClient, tmp_path: Path) -> None:
    weights = tmp_path / "base.safetensors"
    weights.write_bytes(b"not really weights")
    assert client.post(
        "/v1/models", json={"name": "base", "kind": "checkpoint", "source": str(weights)}
    ).is_success
    lora = {
        "name": "ink",
        "kind": "lora",
        "source": "https://example.com/ink.safetensors",
        "sha256": SHA,
        "size": 9,
    }
    assert client.post("/v1/models", json=lora).is_success
    jobs = [
        {"params": {"prompt": "a <lora:ink:0.7> cat", "width": 64, "height": 64, "model": "base"}},
        {"params": {"prompt": "a dog", "width": 64, "height": 64, "model": "base"}},
    ]
    for body in jobs:
        assert client.post("/v1/jobs", json=body).status_code == 201
    [base] = client.get("/v1/fleet/models").json()["models"][:1]
    assert {k: base[k] for k in ("name", "kind", "queued", "running", "workers_loaded", "recent_jobs")} == {
        "name": "base",
        "kind": "checkpoint",
        "queued": 2,
        "running": 0,
        "workers_loaded": 0,
        "recent_jobs": 0,
    }
    assert base["queued_wait_max_seconds"] >= base["queued_wait_avg_seconds"] >= 0
    worker = {"name": "w", "capabilities": {"features": ["lora"]}}
    wid = client.post("/v1/worker/register", json=worker).json()["worker_id"]
    claim = {
        "worker_id": wid,
        "max_jobs": 1,
        "loaded_models": ["base", "lora:ink"],
        "cached_models": ["base", "ink"],
    }
    [job] = client.post("/v1/worker/claim", json=claim).json()["jobs"]
    assert "ink" in job["params"]["prompt"]  # both warm: the one with the LoRA loaded goes first
    view = client.get("/v1/fleet/models").json()
    by_name = {m["name"]: m for m in view["models"]}
    assert view["workers_online"] == 1 and view["affinity_max_wait_seconds"] == 30.0
    assert by_name["base"]["queued"] == 1 and by_name["base"]["running"] == 1
    assert by_name["base"]["workers_loaded"] == 1 and by_name["base"]["workers_cached"] == 0
    assert by_name["ink"] | {"queued_wait_avg_seconds": None, "queued_wait_max_seconds": None} == {
        "name": "ink",
        "kind": "lora",
        "queued": 0,
        "running": 1,
        "workers_loaded": 1,
        "workers_cached": 0,
        "queued_wait_avg_seconds": None,
        "queued_wait_max_seconds": None,
        "recent_wait_avg_seconds": by_name["ink"]["recent_wait_avg_seconds"],
        "recent_jobs": 1,
    }
    assert by_name["base"]["recent_jobs"] == 1 and by_name["base"]["recent_wait_avg_seconds"] >= 0


def test_fleet_models_needs_admin(make_client: MakeClient) -> None:
    secured = make_client(auth="required")
    user = create_key(secured, "t1", "user")
    admin = create_key(secured, "ops", "admin")
    assert secured.get("/v1/fleet/models", headers=user).status_code == 403
    assert secured.get("/v1/fleet/models", headers=admin).status_code == 200
