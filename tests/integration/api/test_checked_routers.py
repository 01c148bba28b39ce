"""Every router that takes a JSON body checks it at the edge (:class:`sdfleet.api.checked.CheckedRoute`):
the admin, models, fleet and worker routes answer a body that is not UTF-8, holds NaN/Infinity, an
unpaired surrogate or a NUL, or is nested thousands deep with a 4xx naming the field — never a 500 —
and store nothing.

Real app (FastAPI TestClient, real SQLite, real blob directory)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.routes import admin, fleet, models, worker, worker_models

JSON = {"content-type": "application/json"}
DEEP = b'{"name": "w", "info": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"

# (method, path, a body that is fine but for the hole marked ``@``)
ROUTES = [
    ("POST", "/v1/models", b'{"name": @, "kind": "lora", "source": "https://example.com/x.safetensors"}'),
    ("PATCH", "/v1/admin/tenants/t1", b'{"rate": @}'),
    ("POST", "/v1/worker/register", b'{"name": @}'),
    ("POST", "/v1/worker/claim", b'{"worker_id": @}'),
    ("POST", "/v1/worker/heartbeat", b'{"worker_id": @}'),
    ("POST", "/v1/worker/upload", b'{"worker_id": @, "job_id": "j", "epoch": 1, "index": 0}'),
    ("POST", "/v1/worker/complete", b'{"worker_id": @, "job_id": "j", "epoch": 1}'),
    ("POST", "/v1/worker/fail", b'{"worker_id": @, "job_id": "j", "epoch": 1}'),
    ("POST", "/v1/worker/release", b'{"worker_id": @, "job_id": "j", "epoch": 1}'),
    ("POST", "/v1/worker/stop", b'{"worker_id": @}'),
    ("POST", "/v1/worker/jobs/j/checkpoint/upload", b'{"worker_id": @, "epoch": 1, "step": 1}'),
    ("POST", "/v1/worker/models/url", b'{"worker_id": @, "name": "m"}'),
]
HOLES = {
    "not-utf8": (b'"caf\xe9"', "body"),
    "nan": (b"NaN", None),
    "infinity": (b"-Infinity", None),
    "lone-surrogate": (b'"\\ud800"', None),
    "nul": (b'"a\\u0000b"', None),
    "int64-overflow": (b"9223372036854775808", None),
    "5000-digits": (b"1" + b"0" * 5000, "body"),
}
IDS = [f"{m} {p}" for m, p, _ in ROUTES]


def _field(template: bytes) -> str:
    """The name of the field the hole is in (``{"name": @}`` → ``name``)."""
    head = template.split(b"@")[0]
    return head.rsplit(b'"', 2)[-2].decode()


@pytest.mark.parametrize("hole", list(HOLES))
@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=IDS)
def test_a_bad_json_value_is_a_422_naming_the_field(
    client: TestClient, method: str, path: str, template: bytes, hole: str
) -> None:
    value, field = HOLES[hole]
    r = client.request(method, path, content=template.replace(b"@", value), headers=JSON)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == (field or _field(template)), error
    assert client.get("/v1/models").json()["models"] == []
    assert client.get("/v1/admin/workers").json()["workers"] == []


@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=IDS)
def test_a_deeply_nested_body_is_a_422(client: TestClient, method: str, path: str, template: bytes) -> None:
    body = template.replace(b"@", b"[" * 50_000 + b"]" * 50_000)
    r = client.request(method, path, content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert "nested too deeply" in r.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=IDS)
def test_a_body_that_is_not_json_text_is_a_422_on_body(
    client: TestClient, method: str, path: str, template: bytes
) -> None:
    r = client.request(method, path, content=b"\xff\xff\x00garbage", headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "body"


def test_a_nul_in_a_path_parameter_is_a_422(client: TestClient) -> None:
    r = client.patch("/v1/admin/tenants/a%00b", json={"rate": 1})
    assert r.status_code == 422, r.text
    r = client.get("/v1/models/a%00b")
    assert r.status_code == 422 and r.json()["error"]["field"] == "name", r.text
    r = client.post(
        "/v1/worker/jobs/a%00b/checkpoint",
        json={"worker_id": "w", "epoch": 1, "step": 1, "key": "k", "size": 1},
    )
    assert r.status_code == 422, r.text


def test_a_lone_surrogate_model_name_is_never_stored(client: TestClient) -> None:
    body = b'{"name": "lora\\udc80", "kind": "lora", "source": "https://example.com/x.safetensors"}'
    assert client.post("/v1/models", content=body, headers=JSON).status_code == 422
    listing = client.get("/v1/models")
    assert listing.status_code == 200 and listing.json()["models"] == []


@pytest.mark.parametrize(
    "router", [admin.router, fleet.router, models.router, worker.router, worker_models.router]
)
def test_the_router_checks_its_requests(router: object) -> None:
    routes = router.routes
    assert routes and all(isinstance(r, CheckedRoute) for r in routes)
