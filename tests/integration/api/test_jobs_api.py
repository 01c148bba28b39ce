"""The native jobs API over HTTP: submit, read, list, cancel, events, outputs, limits, errors."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.integration.api.conftest import MakeClient, run_one_job_as_worker

TXT = {"kind": "txt2img", "params": {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}}


def test_submit_get_and_complete_through_worker_protocol(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=TXT)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued"
    assert job["params"]["prompt"] == "a red circle"
    run_one_job_as_worker(client)
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded"
    assert done["progress"]["fraction"] == 1.0
    assert done["engine_seconds"] == 1.5
    [out] = done["outputs"]
    assert out["seed"] == 7
    img = client.get(out["url"])
    assert img.status_code == 200
    assert img.content == b"\x89PNG fake bytes"
    assert img.headers["content-type"] == "image/png"
    redirect = client.get(f"/v1/jobs/{job['id']}/outputs/0", follow_redirects=False)
    assert redirect.status_code == 307


def test_signed_blob_urls_refuse_tampering(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=TXT).json()
    run_one_job_as_worker(client)
    url = client.get(f"/v1/jobs/{job['id']}").json()["outputs"][0]["url"]
    assert client.get(url.replace("sig=", "sig=x")).status_code == 403
    assert client.get(url.replace("1-0.png", "1-1.png")).status_code == 403


def test_batch_submit_and_cursor_listing(client: TestClient) -> None:
    batch = {"jobs": [{**TXT, "labels": {"run": "b1"}} for _ in range(7)]}
    r = client.post("/v1/jobs", json=batch)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 7
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3, "label": "run:b1"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    queued = client.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
    assert len(queued) == 7


def test_idempotency_key_header_and_field(client: TestClient) -> None:
    a = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": "abc"})
    b = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": "abc"})
    assert a.status_code == 201
    assert b.status_code == 200
    assert a.json()["id"] == b.json()["id"]
    c = client.post("/v1/jobs", json={"jobs": [{**TXT, "idempotency_key": "abc"}, TXT]})
    assert c.json()["created"] == 1
    assert c.json()["jobs"][0]["id"] == a.json()["id"]


def test_cancel_queued_job(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=TXT).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.json()["state"] == "canceled"
    assert r.json()["error"]["code"] == "canceled"


def test_events_stream_replays_the_whole_life(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=TXT).json()
    run_one_job_as_worker(client)
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = "".join(resp.iter_text())
    kinds = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event: ")]
    assert kinds == ["queued", "started", "output", "finished"]
    datas = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert datas[-1]["state"] == "succeeded"
    # resume after the second event
    ids = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("id: ")]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": ids[1]}) as resp:
        rest = "".join(resp.iter_text())
    assert [ln.split(": ", 1)[1] for ln in rest.splitlines() if ln.startswith("event: ")] == [
        "output",
        "finished",
    ]


def test_bad_input_is_a_4xx_naming_the_field(make_client: MakeClient) -> None:
    client = make_client(limits={"max_steps": 50, "max_body_bytes": 20_000, "max_jobs_per_batch": 5})
    cases = [
        ({**TXT, "params": {**TXT["params"], "steps": 51}}, 422, "params.steps"),  # type: ignore[dict-item]
        ({**TXT, "params": {**TXT["params"], "width": 100000}}, 422, "params.width"),  # type: ignore[dict-item]
        ({**TXT, "params": {**TXT["params"], "width": 65}}, 422, "params.width"),  # type: ignore[dict-item]
        ({**TXT, "params": {**TXT["params"], "cfg_scale": "lots"}}, 422, "params.cfg_scale"),  # type: ignore[dict-item]
        ({**TXT, "params": {**TXT["params"], "bogus": 1}}, 422, "params.bogus"),  # type: ignore[dict-item]
        ({**TXT, "kind": "paint"}, 422, "kind"),
        ({**TXT, "webhook_url": "ftp://x"}, 422, "webhook_url"),
        ({"jobs": [TXT] * 6}, 422, "jobs"),
        ({"jobs": []}, 422, "jobs"),
        ({"jobs": [TXT, {**TXT, "priority": 1000}]}, 422, "jobs.1.priority"),
    ]
    for body, status, field in cases:
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"] == field, r.text
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "body"
    big = {**TXT, "params": {**TXT["params"], "prompt": "x" * 30_000}}  # type: ignore[dict-item]
    r = client.post("/v1/jobs", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs", params={"limit": 0}).json()["error"]["field"] == "limit"


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    client.post("/v1/jobs", json=TXT)
    text = client.get("/metrics").text
    assert "sdfleet_jobs_submitted_total 1.0" in text
    assert "sdfleet_job_queue_wait_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text


def test_account_usage_and_webhook_setting(client: TestClient) -> None:
    client.post("/v1/jobs", json=TXT)
    run_one_job_as_worker(client)
    acct = client.get("/v1/account").json()
    assert acct["tenant"] == "local"
    assert acct["webhook_secret"].startswith("whsec_")
    assert acct["usage"]["jobs"] == 1
    assert acct["usage"]["images"] == 1
    r = client.put("/v1account/webhook", json={"url": "http://example.com/hook"})
    assert r.status_code == 404
    r = client.put("/v1/account/webhook", json={"url": "http://example.com/hook"})
    assert r.json()["webhook_url"] == "http://example.com/hook"


def _png(color: tuple[int, int, int], size: int = 64) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_inputs_are_stored_once_and_handed_to_workers(client: TestClient) -> None:
    red = _png((255, 0, 0))
    body = {
        "kind": "img2img",
        "params": {"prompt": "x", "width": 64, "height": 64, "init_images": ["data:image/png;base64," + red]},
    }
    a = client.post("/v1/jobs", json=body).json()
    b = client.post("/v1/jobs", json={**body, "params": {**body["params"], "init_images": [red]}}).json()
    ref = a["params"]["init_images"][0]
    assert ref.startswith("blob:inputs/local/")
    assert b["params"]["init_images"][0] == ref  # content-addressed: stored once
    wid = client.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
    claimed = client.post("/v1/worker/claim", json={"worker_id": wid, "max_jobs": 2}).json()["jobs"]
    for job in claimed:
        url = job["inputs"][ref]
        fetched = client.get(url)
        assert fetched.status_code == 200
        assert fetched.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_images_are_4xx(client: TestClient) -> None:
    def post(kind: str, **params: object) -> dict[str, object]:
        r = client.post(
            "/v1/jobs", json={"kind": kind, "params": {"prompt": "x", "width": 64, "height": 64, **params}}
        )
        assert r.status_code in (404, 422), r.text
        return r.json()["error"]  # type: ignore[no-any-return]

    assert post("img2img", init_images=["!!!not base64"])["field"] == "params.init_images.0"
    assert post("img2img", init_images=["aGVsbG8="])["message"].startswith("the image must be")
    assert post("img2img")["field"] == "params.init_images"
    assert post("txt2img", init_images=[_png((0, 0, 0))])["field"] == "params.init_images"
    assert (
        post("img2img", init_images=["blob:inputs/someone-else/abc.png"])["field"] == "params.init_images.0"
    )
