"""One contract for every blob store: the local directory and a real S3 server (SeaweedFS) behave
the same for bytes, sizes, deletes, and the URLs handed to workers and clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from sdfleet.api.app import create_app
from sdfleet.blobs import BlobStore, LocalBlobStore, UrlSigner
from sdfleet.blobs.s3 import S3BlobStore
from sdfleet.config import Settings
from sdfleet.errors import Conflict, NotFound, PayloadTooLarge, ValidationError
from tests.support.services import S3Server


@dataclass
class BlobEnv:
    """A blob store plus a way to use its URLs the way a worker or a browser would."""

    store: BlobStore
    http: httpx.Client | TestClient

    def fetch(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def upload(self, url: str, body: bytes, content_type: str) -> httpx.Response:
        headers = {**self.store.put_headers(), "content-type": content_type}
        return self.http.put(url, content=body, headers=headers)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blob_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobEnv]:
    if request.param == "local":
        settings = Settings(data_dir=tmp_path / "data", secret_key="k", allowed_hosts=["testserver"])
        store = LocalBlobStore(tmp_path / "blobs", UrlSigner(b"k"))
        with TestClient(create_app(settings, blobs=store)) as client:
            yield BlobEnv(store, client)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", server.access_key)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", server.secret_key)
    store = S3BlobStore(server.url(f"run-{uuid.uuid4().hex[:8]}"))
    with httpx.Client(timeout=30) as client:
        yield BlobEnv(store, client)


@pytest.fixture
def key(blob_env: BlobEnv) -> str:
    """An output key to write. The orchestrator's upload route (local store) takes uploads only for
    a job's current lease, so there it is the output key of a job a worker holds."""
    if isinstance(blob_env.http, TestClient):
        http = blob_env.http
        job = http.post("/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64}})
        assert job.status_code == 201, job.text
        wid = http.post("/v1/worker/register", json={"name": "w"}).json()["worker_id"]
        [claimed] = http.post("/v1/worker/claim", json={"worker_id": wid}).json()["jobs"]
        return str(claimed["uploads"][0]["key"])
    return f"outputs/t1/{uuid.uuid4().hex}/1-0.png"


async def test_put_get_size_delete(blob_env: BlobEnv, key: str) -> None:
    store = blob_env.store
    assert await store.size(key) is None
    await store.put(key, b"hello", "image/png")
    assert await store.get(key) == b"hello"
    assert await store.size(key) == 5
    await store.put(key, b"again!", "image/png")
    assert await store.get(key) == b"again!"
    await store.delete(key)
    assert await store.size(key) is None
    with pytest.raises(NotFound):
        await store.get(key)


async def test_stream_upload_and_its_limit(blob_env: BlobEnv, key: str) -> None:
    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 1000

    assert await blob_env.store.put_stream(key, chunks(5), max_bytes=10_000) == 5000
    assert await blob_env.store.size(key) == 5000
    with pytest.raises(PayloadTooLarge):
        await blob_env.store.put_stream(key + ".big", chunks(20), max_bytes=10_000)
    assert await blob_env.store.size(key + ".big") is None


def test_presigned_put_then_get(blob_env: BlobEnv, key: str) -> None:
    store = blob_env.store
    put = store.put_url(key, 60, "image/png")
    r = blob_env.upload(put, b"\x89PNG data", "image/png")
    assert r.status_code in (200, 201), r.text
    got = blob_env.fetch(store.get_url(key, 60))
    assert got.status_code == 200
    assert got.content == b"\x89PNG data"


def test_an_upload_url_never_replaces_what_is_stored(blob_env: BlobEnv, key: str) -> None:
    """Upload URLs only create: the holder of one (a stale worker, or the accepted one later) cannot
    replace an object at its key; the same bytes again (a retry whose answer was lost) are fine on
    the orchestrator's route, and a conditional PUT's 412 on an object store."""
    store = blob_env.store
    put = store.put_url(key, 60, "image/png")
    assert blob_env.upload(put, b"\x89PNG first", "image/png").status_code in (200, 201)
    again = blob_env.upload(put, b"\x89PNG other bytes", "image/png")
    assert again.status_code in (409, 412), again.text
    assert blob_env.fetch(store.get_url(key, 60)).content == b"\x89PNG first"
    unsigned = blob_env.http.put(put, content=b"\x89PNG other bytes", headers={"content-type": "image/png"})
    assert unsigned.status_code in (403, 409, 412)  # leaving the condition out breaks the signature
    assert blob_env.fetch(store.get_url(key, 60)).content == b"\x89PNG first"


async def test_put_new_never_replaces(blob_env: BlobEnv, key: str) -> None:
    store = blob_env.store
    assert await store.put_new(key, b"one", "image/png") is True
    assert await store.put_new(key, b"one", "image/png") is False  # the same bytes: a retry
    with pytest.raises(Conflict):
        await store.put_new(key, b"two", "image/png")
    assert await store.get(key) == b"one"


async def test_put_new_many_is_all_or_nothing(blob_env: BlobEnv, key: str) -> None:
    store = blob_env.store
    first, second, taken = (key.replace(".png", f"-{n}.png") for n in ("a", "b", "c"))
    assert await store.put_new(taken, b"other", "image/png") is True
    assert await store.put_new_many([(first, b"1", "image/png"), (second, b"2", "image/png")]) == [True, True]
    assert await store.put_new_many([(first, b"1", "image/png")]) == [False]  # a retry
    fresh = key.replace(".png", "-d.png")
    with pytest.raises(Conflict):
        await store.put_new_many([(fresh, b"4", "image/png"), (taken, b"3", "image/png")])
    assert await store.size(fresh) is None  # what the failed batch stored is gone
    assert await store.get(taken) == b"other"
    assert await store.put_new_many([]) == []


def test_tampered_or_expired_urls_are_refused(blob_env: BlobEnv, key: str) -> None:
    store = blob_env.store
    assert blob_env.upload(store.put_url(key, 60, "image/png"), b"x", "image/png").status_code in (200, 201)
    url = store.get_url(key, 60)
    other = url.replace("1-0.png", "1-1.png")
    assert blob_env.fetch(other).status_code in (403, 404)
    short = store.get_url(key, 1)
    time.sleep(2.2)
    assert blob_env.fetch(short).status_code in (400, 403)


async def test_keys_cannot_escape(blob_env: BlobEnv) -> None:
    for bad in ("../x", "/abs", "a/../../b", "a//b", ""):
        with pytest.raises(ValidationError):
            await blob_env.store.put(bad, b"x")


@pytest.mark.s3
async def test_s3_multipart_through_presigned_part_urls(s3_server: S3Server) -> None:
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", s3_server.access_key)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    store = S3BlobStore(s3_server.url("multipart"))
    key = f"checkpoints/{uuid.uuid4().hex}/step-100.safetensors"
    upload_id = await store.start_multipart(key)
    parts = [b"a" * (5 * 1024 * 1024), b"b" * (5 * 1024 * 1024), b"tail"]
    etags = []
    async with httpx.AsyncClient(timeout=60) as client:
        for number, body in enumerate(parts, start=1):
            r = await client.put(store.part_url(key, upload_id, number, 60), content=body)
            assert r.status_code == 200, r.text
            etags.append(r.headers["etag"])
    await store.finish_multipart(key, upload_id, etags)
    assert await store.size(key) == sum(len(p) for p in parts)
    assert (await store.get(key))[-4:] == b"tail"
