"""Worker writes are fenced before they touch storage (issue 14): an inline output or an upload is
accepted only from the worker holding the job at that lease epoch, under the job's own key, and
only the one accepted completion makes it the job's output — a stale, foreign or duplicate write
changes no stored byte, and a rejected write leaves no file.

Real app (FastAPI TestClient, real SQLite, real blob directory), real HTTP worker protocol."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.integration.api.conftest import create_key, ctx_of

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}
GOOD = b"\x89PNG the accepted image"
EVIL = b"\x89PNG an attacker's image"


def _files(client: TestClient) -> dict[str, str]:
    """Every file in the blob directory: relative path → sha256."""
    root = Path(ctx_of(client).blobs.url.removeprefix("file://"))
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _register(client: TestClient, headers: dict[str, str] | None = None, name: str = "w") -> str:
    r = client.post("/v1/worker/register", json={"name": name}, headers=headers or {})
    assert r.status_code == 200, r.text
    return str(r.json()["worker_id"])


def _claim(client: TestClient, wid: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 1}, headers=headers or {})
    assert r.status_code == 200, r.text
    [job] = r.json()["jobs"]
    return dict(job)


def _inline(wid: str, job_id: str, epoch: int, data: bytes, **output: Any) -> dict[str, Any]:
    return {
        "worker_id": wid,
        "job_id": job_id,
        "epoch": epoch,
        "outputs": [{"index": 0, "data_b64": base64.b64encode(data).decode(), "seed": 1, **output}],
        "engine_seconds": 1.0,
    }


def _accepted_job(client: TestClient) -> tuple[str, dict[str, Any], bytes]:
    """A job completed (inline) by its holder; returns the holder, the claim item, the stored bytes."""
    client.post("/v1/jobs", json=TXT)
    wid = _register(client, name="holder")
    job = _claim(client, wid)
    r = client.post("/v1/worker/complete", json=_inline(wid, job["job_id"], job["epoch"], GOOD))
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "accepted", r.text
    out = client.get(f"/v1/jobs/{job['job_id']}").json()["outputs"][0]
    assert client.get(out["url"]).content == GOOD
    return wid, job, GOOD


def test_foreign_tenant_worker_cannot_replace_an_accepted_inline_output(client: TestClient) -> None:
    _, job, _ = _accepted_job(client)
    before = _files(client)
    other = create_key(client, "t2", "worker")
    foreign = _register(client, other, name="foreign")
    r = client.post(
        "/v1/worker/complete", json=_inline(foreign, job["job_id"], job["epoch"], EVIL), headers=other
    )
    assert r.status_code == 409, r.text
    assert _files(client) == before
    out = client.get(f"/v1/jobs/{job['job_id']}").json()["outputs"][0]
    assert client.get(out["url"]).content == GOOD


def test_stale_worker_cannot_replace_the_accepted_output(client: TestClient) -> None:
    _, job, _ = _accepted_job(client)
    before = _files(client)
    stale = _register(client, name="stale")  # same tenant, never held the job
    r = client.post("/v1/worker/complete", json=_inline(stale, job["job_id"], job["epoch"], EVIL))
    assert r.status_code == 409, r.text
    assert _files(client) == before


def test_duplicate_completion_by_the_holder_changes_nothing(client: TestClient) -> None:
    wid, job, _ = _accepted_job(client)
    before = _files(client)
    r = client.post("/v1/worker/complete", json=_inline(wid, job["job_id"], job["epoch"], EVIL))
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "duplicate"
    assert _files(client) == before
    out = client.get(f"/v1/jobs/{job['job_id']}").json()["outputs"][0]
    assert client.get(out["url"]).content == GOOD


def test_a_worker_holding_nothing_writes_no_file(client: TestClient) -> None:
    wid = _register(client, name="idle")
    before = _files(client)
    items = [
        {
            "job_id": f"j_nope{i}",
            "epoch": 1,
            "outputs": [
                {
                    "index": 0,
                    "key": f"outputs/anyone{i}/j_nope{i}/1-0.png",
                    "data_b64": base64.b64encode(EVIL).decode(),
                }
            ],
        }
        for i in range(40)
    ]
    r = client.post("/v1/worker/complete", json={"worker_id": wid, "results": items})
    assert r.status_code in (200, 404, 409), r.text
    if r.status_code == 200:
        assert {x["status"] for x in r.json()["results"]} == {"stale"}
    assert _files(client) == before


def test_holder_cannot_write_outside_the_jobs_own_key(client: TestClient) -> None:
    client.post("/v1/jobs", json=TXT)
    wid = _register(client)
    job = _claim(client, wid)
    before = _files(client)
    body = _inline(
        wid, job["job_id"], job["epoch"], EVIL, key=f"outputs/someone-else/{job['job_id']}/1-0.png"
    )
    r = client.post("/v1/worker/complete", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "outputs.key"
    assert _files(client) == before


def _claimed_upload(client: TestClient) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Submit one job, claim it with a new worker: (worker id, claim item, its one upload target)."""
    client.post("/v1/jobs", json=TXT)
    wid = _register(client)
    job = _claim(client, wid)
    [up] = job["uploads"]
    return wid, job, up


def test_upload_url_is_dead_once_the_completion_is_accepted(client: TestClient) -> None:
    wid, job, up = _claimed_upload(client)
    assert client.put(up["url"], content=GOOD).status_code == 201
    r = client.post(
        "/v1/worker/complete",
        json={
            "worker_id": wid,
            "job_id": job["job_id"],
            "epoch": job["epoch"],
            "outputs": [{"index": 0, "key": up["key"], "seed": 1}],
        },
    )
    assert r.json()["results"][0]["status"] == "accepted", r.text
    before = _files(client)
    again = client.put(up["url"], content=EVIL)  # the same signed URL, after the job is done
    assert again.status_code == 409, again.text
    assert _files(client) == before


def test_stale_epochs_upload_url_writes_nothing(client: TestClient) -> None:
    wid, job, up = _claimed_upload(client)
    # the worker gives the job back; another worker takes it at the next epoch
    r = client.post(
        "/v1/worker/release", json={"worker_id": wid, "job_id": job["job_id"], "epoch": job["epoch"]}
    )
    assert r.status_code == 200, r.text
    other = _register(client, name="other")
    assert _claim(client, other)["epoch"] == job["epoch"] + 1
    before = _files(client)
    late = client.put(up["url"], content=EVIL)
    assert late.status_code == 409, late.text
    assert _files(client) == before


def test_retried_upload_of_the_same_bytes_is_idempotent_but_never_replaces(client: TestClient) -> None:
    wid, job, up = _claimed_upload(client)
    assert client.put(up["url"], content=GOOD).status_code == 201
    assert client.put(up["url"], content=GOOD).status_code == 201  # a retry after a lost answer
    before = _files(client)
    assert client.put(up["url"], content=EVIL).status_code == 409
    assert _files(client) == before
