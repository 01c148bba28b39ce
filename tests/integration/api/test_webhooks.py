"""Webhooks: signed, retried with backoff after the receiver fails, delivered once it recovers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from sdfleet.jobs.webhooks import verify
from tests.integration.api.conftest import MakeClient, create_key, run_one_job_as_worker, store_of


class Receiver:
    """A real HTTP server on loopback that fails the first ``fail_first`` deliveries with 500."""

    def __init__(self, fail_first: int):
        self.fail_first = fail_first
        self.calls: list[tuple[int, dict[str, str], str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                status = 500 if len(receiver.calls) < receiver.fail_first else 200
                receiver.calls.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; calls so far: {[c[0] for c in self.calls]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.server.shutdown()


def test_webhook_signed_retried_and_delivered(client: TestClient, receiver: Receiver) -> None:
    job = client.post(
        "/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64}, "webhook_url": receiver.url}
    ).json()
    run_one_job_as_worker(client)
    secret = client.get("/v1/account").json()["webhook_secret"]

    def finished_delivered() -> bool:
        return any(s == 200 and json.loads(b)["type"] == "job.finished" for s, _, b in receiver.calls)

    receiver.wait_for(finished_delivered)

    def every_message_delivered() -> bool:
        ids = {h["webhook-id"] for _, h, _ in receiver.calls}
        return all(any(s == 200 and h["webhook-id"] == i for s, h, _ in receiver.calls) for i in ids)

    receiver.wait_for(every_message_delivered)
    time.sleep(1.0)  # nothing more may arrive for a delivered message
    statuses = [s for s, _, _ in receiver.calls]
    assert statuses[:2] == [500, 500]
    by_id: dict[str, list[int]] = {}
    for status, headers, body in receiver.calls:
        assert verify(secret, headers, body), "bad signature"
        assert not verify("whsec_" + "A" * 44, headers, body)
        by_id.setdefault(headers["webhook-id"], []).append(status)
        payload = json.loads(body)
        assert payload["data"]["id"] == job["id"]
    for statuses_of_one in by_id.values():
        assert statuses_of_one.count(200) == 1
        assert statuses_of_one[-1] == 200
    types = {json.loads(b)["type"] for s, _, b in receiver.calls if s == 200}
    assert {"job.queued", "job.started", "job.finished"} <= types

    async def outbox() -> list[str]:
        return [m.state for m in await store_of(client).read(lambda tx: tx.list_webhooks(job["id"]))]

    assert set(client.portal.call(outbox)) == {"delivered"}  # type: ignore[union-attr]


def test_tenant_webhook_receives_finished_events(client: TestClient, receiver: Receiver) -> None:
    receiver.fail_first = 0
    client.put("/v1/account/webhook", json={"url": receiver.url})
    client.post("/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64}})
    run_one_job_as_worker(client)
    receiver.wait_for(lambda: any(json.loads(b)["type"] == "job.finished" for _, _, b in receiver.calls))


def test_private_destinations_refused_by_default(make_client: MakeClient, receiver: Receiver) -> None:
    client = make_client(allow_private_webhooks=False)
    job = client.post(
        "/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64}, "webhook_url": receiver.url}
    ).json()

    async def last_error() -> str | None:
        msgs = await store_of(client).read(lambda tx: tx.list_webhooks(job["id"]))
        return msgs[0].last_error if msgs else None

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.portal.call(last_error):  # type: ignore[union-attr]
        time.sleep(0.05)
    assert "non-public" in (client.portal.call(last_error) or "")  # type: ignore[union-attr]
    assert receiver.calls == []


class SlowReceiver:
    """A real HTTP server on loopback that answers each POST after ``delay`` seconds (recording
    when every request arrived)."""

    def __init__(self, delay: float):
        self.delay = delay
        self.arrived: list[tuple[float, str]] = []
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                receiver.arrived.append((time.monotonic(), json.loads(body)["type"]))
                receiver.stop.wait(receiver.delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_receiver_delays_only_its_own_deliveries(make_client: MakeClient) -> None:
    """Tenant A's receiver takes 8 s per delivery and A has a backlog; tenant B's fast receiver
    still gets B's event within a second or two, while A's deliveries are stuck."""
    slow, fast = SlowReceiver(delay=8.0), SlowReceiver(delay=0.0)
    try:
        client = make_client(webhook_timeout=9.0, webhook_per_destination=2)
        a, b = create_key(client, "tenant-a", "user"), create_key(client, "tenant-b", "user")
        for _ in range(6):
            r = client.post(
                "/v1/jobs",
                json={"params": {"prompt": "a", "width": 64, "height": 64}, "webhook_url": slow.url},
                headers=a,
            )
            assert r.status_code in (200, 201, 202), r.text
        deadline = time.monotonic() + 10
        while not slow.arrived and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slow.arrived, "the slow receiver got nothing"
        sent = time.monotonic()
        r = client.post(
            "/v1/jobs",
            json={"params": {"prompt": "b", "width": 64, "height": 64}, "webhook_url": fast.url},
            headers=b,
        )
        assert r.status_code in (200, 201, 202), r.text
        deadline = sent + 6
        while not fast.arrived and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fast.arrived, "tenant B's delivery waited behind tenant A's slow receiver"
        assert fast.arrived[0][0] - sent < 3.0
        assert len(slow.arrived) <= 2, "more in flight to one destination than webhook_per_destination"
    finally:
        slow.close()
        fast.close()


def test_deliveries_held_at_once_are_bounded_overall(make_client: MakeClient) -> None:
    """``webhook_concurrency`` caps what one replica holds, below the per-destination cap."""
    slow = SlowReceiver(delay=3.0)
    try:
        client = make_client(webhook_timeout=5.0, webhook_concurrency=3, webhook_per_destination=4)
        for _ in range(8):
            r = client.post(
                "/v1/jobs",
                json={"params": {"prompt": "a", "width": 64, "height": 64}, "webhook_url": slow.url},
            )
            assert r.status_code in (200, 201, 202), r.text
        deadline = time.monotonic() + 10
        while len(slow.arrived) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # more would have arrived by now without the bound
        assert len(slow.arrived) == 3
    finally:
        slow.close()
