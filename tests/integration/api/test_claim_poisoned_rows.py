"""A stored job that cannot be turned into a claim reply fails alone (issue 14): corrupt JSON written
straight into its row, a lone surrogate in a stored prompt, a spec that is not an object. The claim
still answers 200 with the other jobs, the poisoned job ends ``failed`` as ``invalid_input`` with no
lease held, the worker is not blamed, and the next claim is not broken by it.

Real app (FastAPI TestClient, real SQLite, real blob directory); the rows are poisoned with raw SQL, as
data stored by an older version (before validation at the edge) or by hand would be."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from sdfleet.store.sql import SqlTx
from tests.integration.api.conftest import store_of

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}
POISONS = {
    "corrupt-json": '{"prompt": "a red ci',
    "lone-surrogate": '{"prompt": "\\ud800", "width": 64, "height": 64, "steps": 4}',
    "surrogate-key": '{"\\udfff": 1, "prompt": "p", "width": 64, "height": 64, "steps": 4}',
    "not-an-object": "[1, 2, 3]",
    "null": "null",
    "bad-model-list": '{"prompt": "p", "loras": 7, "width": 64, "height": 64, "steps": 4}',
}


def _poison(client: TestClient, job_id: str, spec: str) -> None:
    def write(tx: SqlTx) -> None:
        tx.conn.execute(text("UPDATE jobs SET spec = :spec WHERE id = :id"), {"spec": spec, "id": job_id})

    client.portal.call(store_of(client).write, write)  # type: ignore[union-attr]


def _job_row(client: TestClient, job_id: str) -> dict[str, Any]:
    def read(tx: SqlTx) -> dict[str, Any]:
        row = tx.conn.execute(
            text(
                "SELECT state, lease_worker, lease_expires_at, error_code, error_message FROM jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
        return dict(row._mapping)

    return client.portal.call(store_of(client).read, read)  # type: ignore[union-attr, no-any-return]


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_row_fails_alone_and_the_rest_of_the_claim_goes_out(
    client: TestClient, poison: str
) -> None:
    ids = [client.post("/v1/jobs", json=TXT).json()["id"] for _ in range(3)]
    bad = ids[1]
    _poison(client, bad, POISONS[poison])
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]

    r = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 3})
    assert r.status_code == 200, r.text
    assert sorted(j["job_id"] for j in r.json()["jobs"]) == sorted([ids[0], ids[2]])

    row = _job_row(client, bad)
    assert row["state"] == "failed", row
    assert row["error_code"] == "invalid_input"
    assert row["lease_expires_at"] is None, row  # no lease held: nothing for the reaper to give back
    # nothing left running for it, nothing handed out again, and the worker is not blamed
    again = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 3})
    assert again.status_code == 200 and again.json()["jobs"] == [], again.text
    [worker] = client.get("/v1/admin/workers").json()["workers"]
    assert worker["state"] == "active" and worker["jobs_failed"] == 0, worker
    stats = client.get("/v1/admin/stats").json()["jobs"]
    assert stats.get("running") == 2 and stats.get("failed") == 1, stats


@pytest.mark.parametrize("poison", ["corrupt-json", "lone-surrogate"])
def test_the_owner_can_still_list_and_read_after_a_poisoned_claim(client: TestClient, poison: str) -> None:
    ids = [client.post("/v1/jobs", json=TXT).json()["id"] for _ in range(2)]
    _poison(client, ids[0], POISONS[poison])
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    assert client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 2}).status_code == 200
    assert client.get("/v1/jobs").status_code == 200
    r = client.get(f"/v1/jobs/{ids[0]}")
    assert r.status_code == 200 and r.json()["state"] == "failed", r.text


def test_a_poisoned_row_alone_in_the_queue_does_not_stop_later_jobs(client: TestClient) -> None:
    first = client.post("/v1/jobs", json={**TXT, "priority": 5}).json()["id"]
    _poison(client, first, POISONS["corrupt-json"])
    later = client.post("/v1/jobs", json=TXT).json()["id"]
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    handed: list[str] = []
    for _ in range(3):
        r = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 1})
        assert r.status_code == 200, r.text
        handed += [j["job_id"] for j in r.json()["jobs"]]
    assert handed == [later]
    assert _job_row(client, first)["state"] == "failed"
