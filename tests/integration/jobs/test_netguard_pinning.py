"""The private-address guard connects to the address it checked (DNS rebinding): a name that
answers a public address first and 127.0.0.1 afterwards never reaches a loopback listener, for
webhooks (orchestrator) and model downloads (worker); with private destinations allowed the same
transport still reaches loopback, keeping the name in the Host header."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdfleet.errors import ModelUnavailable, ValidationError
from sdfleet.models import ModelCache
from sdfleet.netguard import guarded_transport
from sdfleet.wire import ModelSource
from tests.integration.api.conftest import MakeClient, ctx_of, make_client, store_of  # noqa: F401  (fixture)

NAME = "rebind.sdfleet.test"
PUBLIC = "8.8.8.8"  # what the name answers first (passes the check); later answers are loopback


class RebindingResolver:
    """``socket.getaddrinfo`` for :data:`NAME`: a public address on the first lookup, then
    127.0.0.1 (what a rebinding attacker's DNS server does); every other name resolves normally."""

    def __init__(self, first: str = PUBLIC) -> None:
        self.first = first
        self.lookups = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) != NAME:  # anyio passes bytes
            return self._real(host, port, *args, **kwargs)
        self.lookups += 1
        addr = self.first if self.lookups == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 80)))]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> RebindingResolver:
    resolver = RebindingResolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


class Listener:
    """A real HTTP server on 127.0.0.1 that counts every connection it accepts and serves
    ``body`` to GET and 200 to POST, recording the Host header of each request."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.connections = 0
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("host", ""))
                self.send_response(200)
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def do_POST(self) -> None:
                outer.hosts.append(self.headers.get("host", ""))
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[Listener]:
    s = Listener()
    yield s
    s.close()


def safetensors(size: int) -> bytes:
    header = b'{"__metadata__":{}}'
    return (len(header).to_bytes(8, "little") + header + b"\x01" * size)[:size]


async def test_model_download_never_reaches_loopback_through_rebinding(
    tmp_path: Path, server: Listener, rebinding: RebindingResolver
) -> None:
    data = safetensors(4096)
    server.body = data
    cache = ModelCache(
        tmp_path / "cache", budget_bytes=1 << 20, allow_private_urls=False, retry_base=0.01, progress=False
    )
    url = f"http://{NAME}:{server.port}/m.safetensors"
    model = ModelSource(
        name="m", kind="lora", source=url, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    try:
        with pytest.raises(ModelUnavailable):
            await cache.fetch(model)
    finally:
        await cache.aclose()
    assert server.connections == 0, "a rebinding name reached the loopback listener"
    assert rebinding.lookups >= 1


async def test_guarded_transport_resolves_once_per_connection(server: Listener) -> None:
    """One lookup feeds both the check and the connect; a loopback answer is refused, named."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    transport = guarded_transport(allow_private=False, field="webhook_url", resolver=resolver)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        with pytest.raises(ValidationError, match="non-public") as err:
            await client.get(f"http://{NAME}:{server.port}/x")
    assert err.value.field == "webhook_url"
    assert lookups == [NAME]
    assert server.connections == 0


async def test_loopback_allowed_configuration_still_connects_with_the_name_as_host(
    tmp_path: Path, server: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver(first="127.0.0.1"))
    data = safetensors(4096)
    server.body = data
    cache = ModelCache(
        tmp_path / "cache", budget_bytes=1 << 20, allow_private_urls=True, retry_base=0.01, progress=False
    )
    url = f"http://{NAME}:{server.port}/m.safetensors"
    model = ModelSource(
        name="m", kind="lora", source=url, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    try:
        path = await cache.fetch(model)
    finally:
        await cache.aclose()
    assert path is not None and path.read_bytes() == data
    assert server.hosts and set(server.hosts) == {f"{NAME}:{server.port}"}


def test_webhook_never_reaches_loopback_through_rebinding(
    make_client: MakeClient,  # noqa: F811  (the fixture imported above)
    server: Listener,
    rebinding: RebindingResolver,
) -> None:
    client = make_client(allow_private_webhooks=False, webhook_timeout=2.0)
    job = client.post(
        "/v1/jobs",
        json={
            "params": {"prompt": "x", "width": 64, "height": 64},
            "webhook_url": f"http://{NAME}:{server.port}/hook",
        },
    ).json()

    async def attempted() -> bool:
        msgs = await store_of(client).read(lambda tx: tx.list_webhooks(job["id"]))
        return bool(msgs) and msgs[0].attempts > 0

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not client.portal.call(attempted):  # type: ignore[union-attr]
        time.sleep(0.05)
    assert client.portal.call(attempted), "the delivery was never attempted"  # type: ignore[union-attr]
    assert server.connections == 0, "a rebinding name reached the loopback listener"


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[Listener, ssl.SSLContext]]:
    """An HTTPS listener on 127.0.0.1 whose certificate names only :data:`NAME` (self-signed), and
    a client context that trusts it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_cert = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(
        [
            *make_cert,
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={NAME}"),
            *("-addext", f"subjectAltName=DNS:{NAME}"),
        ],
        check=True,
        capture_output=True,
    )
    listener = Listener(b"over tls")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    listener._httpd.socket = server_ctx.wrap_socket(listener._httpd.socket, server_side=True)
    yield listener, ssl.create_default_context(cafile=str(cert))
    listener.close()


async def test_tls_is_verified_against_the_host_name_not_the_pinned_ip(
    tls_listener: tuple[Listener, ssl.SSLContext],
) -> None:
    listener, trust = tls_listener

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    transport = guarded_transport(allow_private=True, resolver=resolver, ssl_context=trust)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        r = await client.get(f"https://{NAME}:{listener.port}/x")
        assert r.status_code == 200 and r.content == b"over tls"
        assert listener.hosts == [f"{NAME}:{listener.port}"]
        # the same address under another name: the certificate does not match it, refused
        with pytest.raises(httpx.ConnectError, match=r"certificate|hostname"):
            await client.get(f"https://other.sdfleet.test:{listener.port}/x")
