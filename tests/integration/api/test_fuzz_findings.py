"""Regression tests for the server errors the schemathesis run (tests/fuzz) found on the native API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.integration.api.conftest import store_of

TXT: dict[str, Any] = {
    "kind": "txt2img",
    "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4},
}


def test_an_empty_idempotency_key_header_is_refused_not_stored(client: TestClient) -> None:
    """``Idempotency-Key:`` (empty) was stored as the key "" without being looked up: the second submit with
    it hit the (tenant, idempotency_key) unique constraint and answered 500."""
    for _ in range(2):
        r = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": ""})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "idempotency-key", r.text
    stored = client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant=None))  # type: ignore[union-attr]
    assert stored == []
    first = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": "k"})
    again = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": "k"})
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
