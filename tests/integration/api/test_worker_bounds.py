"""Numbers and strings from workers are bounded like those from users (issue 14), over real HTTP: an
integer ≥ 2**63, ``engine_seconds`` of 1e308, NaN, Infinity or below zero, a megabyte of text where a
name goes — each is a 422 naming the field, stores nothing (no file, no worker, the job still held), and
the tenant's cost stays a finite number.

Real app (FastAPI TestClient, real SQLite, real blob directory), the worker protocol as JSON bytes."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import ctx_of

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}
BIG = 2**63
MEGABYTE = "x" * (1024 * 1024)
JSON = {"content-type": "application/json"}


def _raw(value: Any) -> bytes:
    """JSON as a hostile worker may write it: NaN and Infinity as bare words (``json.dumps`` does)."""
    return json.dumps(value, allow_nan=True).encode()


def _files(client: TestClient) -> set[str]:
    root = Path(ctx_of(client).blobs.url.removeprefix("file://"))
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _held(client: TestClient, price: float = 1000.0) -> tuple[str, dict[str, Any]]:
    """A submitted job claimed by a new worker (at the highest price a worker may ask)."""
    assert client.post("/v1/jobs", json=TXT).status_code == 201
    r = client.post("/v1/worker/register", json={"name": "w", "price_per_hour": price})
    wid = str(r.json()["worker_id"])
    [job] = client.post("/v1/worker/claim", json={"worker_id": wid}).json()["jobs"]
    return wid, dict(job)


def _refused(client: TestClient, path: str, body: Any, field: str) -> None:
    r = client.post(path, content=_raw(body), headers=JSON)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert field in error["message"]


def _cost(client: TestClient) -> float:
    usage = client.get("/v1/account").json()["usage"]
    assert isinstance(usage["cost_usd"], float | int) and math.isfinite(usage["cost_usd"]), usage
    assert isinstance(usage["engine_seconds"], float | int) and math.isfinite(usage["engine_seconds"]), usage
    return float(usage["cost_usd"])


def _inline(wid: str, job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    output = {"index": 0, "data_b64": base64.b64encode(b"\x89PNG image").decode(), "seed": 1}
    output.update(fields.pop("output", {}))
    return {
        "worker_id": wid,
        "job_id": job["job_id"],
        "epoch": job["epoch"],
        "outputs": [output],
        "engine_seconds": 1.0,
        **fields,
    }


COMPLETE_CASES = [
    ({"engine_seconds": 1e308}, "engine_seconds"),
    ({"engine_seconds": float("nan")}, "engine_seconds"),
    ({"engine_seconds": float("inf")}, "engine_seconds"),
    ({"engine_seconds": -1.0}, "engine_seconds"),
    ({"engine_seconds": BIG}, "engine_seconds"),
    ({"epoch": BIG}, "epoch"),
    ({"epoch": -BIG - 1}, "epoch"),
    ({"output": {"seed": BIG}}, "outputs.0.seed"),
    ({"output": {"size": BIG}}, "outputs.0.size"),
    ({"output": {"index": BIG}}, "outputs.0.index"),
    ({"output": {"infotext": MEGABYTE}}, "outputs.0.infotext"),
    ({"output": {"content_type": MEGABYTE}}, "outputs.0.content_type"),
    ({"timings": {"engine": 1e308}}, "timings.engine"),
    ({"timings": {"engine": float("nan")}}, "timings.engine"),
    ({"result": {"n": BIG}}, "result.n"),
    ({"result": {"blob": MEGABYTE}}, "result"),
    ({"worker_id": MEGABYTE}, "worker_id"),
]


@pytest.mark.parametrize(("change", "field"), COMPLETE_CASES, ids=[f for _, f in COMPLETE_CASES])
def test_an_out_of_bounds_completion_is_422_and_stores_nothing(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    wid, job = _held(client)
    before, cost = _files(client), _cost(client)
    _refused(client, "/v1/worker/complete", _inline(wid, job, **change), field)
    assert _files(client) == before
    assert client.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "running"
    assert _cost(client) == cost
    # the worker can still report it properly, and the cost is a number
    r = client.post("/v1/worker/complete", json=_inline(wid, job, engine_seconds=30 * 86400.0))
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "accepted", r.text
    assert 0 < _cost(client) < 1e7


def test_the_largest_engine_time_keeps_every_cost_finite(client: TestClient) -> None:
    wid, job = _held(client)
    r = client.post("/v1/worker/complete", json=_inline(wid, job, engine_seconds=30 * 86400.0))
    assert r.status_code == 200, r.text
    view = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert math.isfinite(view["cost_usd"]) and view["cost_usd"] > 0
    stats = client.get("/v1/admin/stats").json()["last_hour"]["totals"]
    assert math.isfinite(stats["cost_usd"]) and math.isfinite(stats["engine_seconds"])


FAIL_CASES = [
    ({"engine_seconds": 1e308}, "engine_seconds"),
    ({"engine_seconds": float("nan")}, "engine_seconds"),
    ({"engine_seconds": -0.5}, "engine_seconds"),
    ({"epoch": BIG}, "epoch"),
    ({"code": MEGABYTE}, "code"),
    ({"field": MEGABYTE}, "field"),
]


@pytest.mark.parametrize(("change", "field"), FAIL_CASES, ids=[f for _, f in FAIL_CASES])
def test_an_out_of_bounds_failure_report_is_422_and_the_job_stays_held(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    wid, job = _held(client)
    cost = _cost(client)
    body = {"worker_id": wid, "job_id": job["job_id"], "epoch": job["epoch"], "message": "x", **change}
    _refused(client, "/v1/worker/fail", body, field)
    view = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert view["state"] == "running" and view["error"] is None
    assert _cost(client) == cost


def test_a_megabyte_error_message_is_clamped_not_refused(client: TestClient) -> None:
    wid, job = _held(client)
    body = {"worker_id": wid, "job_id": job["job_id"], "epoch": job["epoch"], "message": MEGABYTE}
    r = client.post("/v1/worker/fail", json={**body, "retryable": False})
    assert r.status_code == 200, r.text
    view = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert view["state"] == "failed"
    assert 0 < len(view["error"]["message"]) <= 4100


HEARTBEAT_CASES = [
    ({"step": BIG}, "jobs.0.step"),
    ({"total": BIG}, "jobs.0.total"),
    ({"epoch": BIG}, "jobs.0.epoch"),
    ({"loss": 1e308}, "jobs.0.loss"),
    ({"it_per_s": -1.0}, "jobs.0.it_per_s"),
    ({"job_id": MEGABYTE}, "jobs.0.job_id"),
]


@pytest.mark.parametrize(("change", "field"), HEARTBEAT_CASES, ids=[f for _, f in HEARTBEAT_CASES])
def test_an_out_of_bounds_heartbeat_is_422_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    wid, job = _held(client)
    beat = {"job_id": job["job_id"], "epoch": job["epoch"], "step": 1, "total": 4, **change}
    _refused(client, "/v1/worker/heartbeat", {"worker_id": wid, "jobs": [beat]}, field)
    assert client.get(f"/v1/jobs/{job['job_id']}").json()["progress"]["step"] == 0


def test_an_oversized_loaded_model_name_in_a_heartbeat_is_422(client: TestClient) -> None:
    wid, _ = _held(client)
    _refused(
        client, "/v1/worker/heartbeat", {"worker_id": wid, "loaded_models": [MEGABYTE]}, "loaded_models.0"
    )


REGISTER_CASES = [
    ({"gpu_memory_mb": BIG}, "gpu_memory_mb"),
    ({"price_per_hour": 1e308}, "price_per_hour"),
    ({"price_per_hour": float("nan")}, "price_per_hour"),
    ({"price_per_hour": -1.0}, "price_per_hour"),
    ({"name": MEGABYTE}, "name"),
    ({"gpu_name": MEGABYTE}, "gpu_name"),
    ({"capabilities": {"max_pixels": BIG}}, "capabilities.max_pixels"),
    ({"capabilities": {"kinds": [MEGABYTE]}}, "capabilities.kinds.0"),
    ({"info": {"blob": MEGABYTE}}, "info"),
    ({"info": {"n": BIG}}, "info.n"),
]


@pytest.mark.parametrize(("change", "field"), REGISTER_CASES, ids=[f for _, f in REGISTER_CASES])
def test_an_out_of_bounds_registration_is_422_and_registers_nothing(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    _refused(client, "/v1/worker/register", {"name": "w", **change}, field)
    assert client.get("/v1/admin/workers").json()["workers"] == []


CLAIM_CASES = [
    ({"max_jobs": BIG}, "max_jobs"),
    ({"wait": 1e308}, "wait"),
    ({"wait": float("nan")}, "wait"),
    ({"cached_models": [MEGABYTE]}, "cached_models.0"),
]


@pytest.mark.parametrize(("change", "field"), CLAIM_CASES, ids=[f for _, f in CLAIM_CASES])
def test_an_out_of_bounds_claim_is_422_and_hands_out_nothing(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    assert client.post("/v1/jobs", json=TXT).status_code == 201
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    _refused(client, "/v1/worker/claim", {"worker_id": wid, **change}, field)
    assert client.get("/v1/jobs").json()["jobs"][0]["state"] == "queued"


def test_an_out_of_bounds_upload_request_is_422(client: TestClient) -> None:
    wid, job = _held(client)
    body = {"worker_id": wid, "job_id": job["job_id"], "epoch": job["epoch"], "index": BIG}
    _refused(client, "/v1/worker/upload", body, "index")
