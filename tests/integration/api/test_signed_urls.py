"""Signed blob URLs over HTTP (local blob store): the download route (``GET /v1/blobs/{key}``) and the
upload route (``PUT /v1/worker/blobs/{key}``) check them with one :func:`sdfleet.blobs.verify_signed`, and
a signature that is not even ASCII is refused (403), not a 500 from the digest comparison.

Real app (FastAPI TestClient, real SQLite, real blob directory)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import ctx_of, run_one_job_as_worker

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}
BAD_SIGS = ["é", "\u00ff" * 43, "ü" + "a" * 42, "日本", "\U0001f600"]


def _with_sig(url: str, sig: str) -> str:
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query)}
    query["sig"] = sig
    return f"{parts.path}?{urlencode(query)}"


def _output_url(client: TestClient) -> str:
    job = client.post("/v1/jobs", json=TXT).json()
    run_one_job_as_worker(client)
    return str(client.get(f"/v1/jobs/{job['id']}").json()["outputs"][0]["url"])


@pytest.mark.parametrize("sig", BAD_SIGS, ids=["e-acute", "y-umlaut-43", "u-umlaut-43", "cjk", "emoji"])
def test_a_non_ascii_signature_on_a_download_is_403(client: TestClient, sig: str) -> None:
    url = _output_url(client)
    r = client.get(_with_sig(url, sig))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["field"] == "sig"
    assert client.get(url).status_code == 200  # the real link still works


@pytest.mark.parametrize("sig", BAD_SIGS, ids=["e-acute", "y-umlaut-43", "u-umlaut-43", "cjk", "emoji"])
def test_a_non_ascii_signature_on_an_upload_is_403_and_stores_nothing(client: TestClient, sig: str) -> None:
    client.post("/v1/jobs", json=TXT)
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    [job] = client.post("/v1/worker/claim", json={"worker_id": wid}).json()["jobs"]
    up = job["uploads"][0]
    r = client.put(_with_sig(up["url"], sig), content=b"\x89PNG bytes")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["field"] == "sig"
    assert not ctx_of(client).blobs.path(up["key"]).exists()  # type: ignore[attr-defined]
    assert client.put(up["url"], content=b"\x89PNG bytes").status_code == 201


def test_percent_encoded_invalid_utf8_signature_is_403(client: TestClient) -> None:
    url = _output_url(client)
    path, _, query = url.partition("?")
    tampered = "&".join(p if not p.startswith("sig=") else "sig=%ff%fe" for p in query.split("&"))
    assert client.get(f"{path}?{tampered}").status_code == 403


def test_a_signature_for_the_upload_does_not_open_the_download(client: TestClient) -> None:
    client.post("/v1/jobs", json=TXT)
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    [job] = client.post("/v1/worker/claim", json={"worker_id": wid}).json()["jobs"]
    up = job["uploads"][0]
    assert client.put(up["url"], content=b"\x89PNG bytes").status_code == 201
    down = up["url"].replace("/v1/worker/blobs/", "/v1/blobs/")
    assert client.get(down).status_code == 403


def test_an_expired_link_is_403_naming_exp(client: TestClient) -> None:
    url = _output_url(client)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["exp"] = "1"
    r = client.get(f"{parts.path}?{urlencode(query)}")
    assert r.status_code == 403 and r.json()["error"]["field"] == "exp"
