"""The worker's model cache against a real HTTP server on 127.0.0.1: verified downloads, resume with
Range after a cut, a server that ignores Range, sha256 mismatch, shared downloads, LRU eviction under
a budget with pins, names that try to escape, pickle refusal, the private-address guard, redirects,
local sources, and s3:// sources presigned against a real S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.errors import ModelUnavailable
from sdfleet.models import ModelCache
from sdfleet.models.sources import check_name
from sdfleet.wire import ModelSource
from tests.support.files import FileServer

KB = 1024


def safetensors_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that start like a safetensors file (header length, JSON), then noise."""
    header = json.dumps({"__metadata__": {"seed": str(seed)}}).encode()
    head = len(header).to_bytes(8, "little") + header
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + body)[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer()
    yield s
    s.close()


def make_cache(tmp_path: Path, **overrides: Any) -> ModelCache:
    values: dict[str, Any] = {
        "budget_bytes": 100 * 1024 * KB,
        "allow_private_urls": True,
        "retry_base": 0.01,
        "progress": False,
    }
    values.update(overrides)
    return ModelCache(tmp_path / "cache", **values)


def source(url: str, data: bytes, name: str = "m", kind: str = "lora", **extra: Any) -> ModelSource:
    return ModelSource(name=name, kind=kind, source=url, sha256=sha(data), size=len(data), **extra)


async def test_a_download_is_verified_stored_by_sha_and_reused(tmp_path: Path, server: FileServer) -> None:
    data = safetensors_bytes(300 * KB)
    url = server.add("/loras/style.safetensors", data)
    cache = make_cache(tmp_path)
    path = await cache.fetch(source(url, data, name="style"))
    digest = sha(data)
    assert path == tmp_path / "cache" / "blobs" / digest[:2] / f"{digest}.safetensors"
    assert path is not None and path.read_bytes() == data
    # the engine's hash sidecar is written, so it never hashes the file again
    assert path.with_name(path.name + ".sha256").read_text().split()[:2] == [digest, str(len(data))]
    assert await cache.fetch(source(url, data, name="style")) == path
    assert server.count("/loras/style.safetensors") == 1
    assert cache.names_on_disk() == ["style"] and cache.shas_on_disk() == [digest]
    assert not list((tmp_path / "cache" / "partial").iterdir())
    await cache.aclose()

    again = make_cache(tmp_path)  # a restarted worker finds it, with its name
    assert again.names_on_disk() == ["style"]
    assert await again.fetch(source(url, data, name="style")) == path
    assert server.count("/loras/style.safetensors") == 1
    await again.aclose()


async def test_an_interrupted_transfer_resumes_with_a_range_request(
    tmp_path: Path, server: FileServer
) -> None:
    data = safetensors_bytes(1024 * KB, seed=1)
    url = server.add("/big.safetensors", data, cut_after=300 * KB)
    cache = make_cache(tmp_path)
    path = await cache.fetch(source(url, data))
    assert path is not None and path.read_bytes() == data
    hits = server.hits_for("/big.safetensors")
    assert len(hits) == 2
    assert hits[0].range is None
    assert hits[1].range is not None
    resumed_at = int(hits[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 300 * KB
    await cache.aclose()


async def test_a_part_file_left_by_a_stopped_worker_is_resumed(tmp_path: Path, server: FileServer) -> None:
    data = safetensors_bytes(512 * KB, seed=2)
    url = server.add("/m.safetensors", data)
    part = tmp_path / "cache" / "partial" / f"{sha(data)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 200 * KB])
    cache = make_cache(tmp_path)
    path = await cache.fetch(source(url, data))
    assert path is not None and path.read_bytes() == data
    assert [h.range for h in server.hits_for("/m.safetensors")] == [f"bytes={200 * KB}-"]
    await cache.aclose()


async def test_a_server_that_ignores_range_restarts_the_file(tmp_path: Path, server: FileServer) -> None:
    data = safetensors_bytes(256 * KB, seed=3)
    url = server.add("/m.safetensors", data, ignore_range=True)
    part = tmp_path / "cache" / "partial" / f"{sha(data)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not survive" * 100)
    cache = make_cache(tmp_path)
    path = await cache.fetch(source(url, data))
    assert path is not None and path.read_bytes() == data
    assert server.count("/m.safetensors") == 1
    await cache.aclose()


async def test_a_wrong_sha256_is_a_retryable_error_and_the_file_is_deleted(
    tmp_path: Path, server: FileServer
) -> None:
    data = safetensors_bytes(128 * KB, seed=4)
    url = server.add("/m.safetensors", data)
    cache = make_cache(tmp_path)
    wrong = ModelSource(name="m", kind="lora", source=url, sha256="ab" * 32, size=len(data))
    with pytest.raises(ModelUnavailable) as err:
        await cache.fetch(wrong)
    assert err.value.retryable and err.value.code == "model_unavailable"
    assert "sha256 mismatch" in str(err.value)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "index.json"]
    assert files == []
    assert cache.shas_on_disk() == [] and cache.names_on_disk() == []
    await cache.aclose()


async def test_a_source_sending_more_than_its_size_is_cut_off(tmp_path: Path, server: FileServer) -> None:
    data = safetensors_bytes(128 * KB, seed=5)
    url = server.add("/m.safetensors", data)
    cache = make_cache(tmp_path)
    with pytest.raises(ModelUnavailable, match="more than"):
        await cache.fetch(ModelSource(name="m", kind="lora", source=url, sha256=sha(data), size=1000))
    await cache.aclose()


async def test_concurrent_requests_for_one_file_share_one_download(
    tmp_path: Path, server: FileServer
) -> None:
    data = safetensors_bytes(640 * KB, seed=6)
    url = server.add("/shared.safetensors", data, chunk_delay=0.02)
    cache = make_cache(tmp_path)
    models = [source(url, data, name=f"alias-{i % 2}") for i in range(6)]
    paths = await asyncio.gather(*(cache.fetch(m) for m in models))
    assert len(set(paths)) == 1
    assert server.count("/shared.safetensors") == 1
    assert sorted(cache.names_on_disk()) == ["alias-0", "alias-1"]
    await cache.aclose()


async def test_budget_evicts_least_recently_used_and_never_a_pinned_one(
    tmp_path: Path, server: FileServer
) -> None:
    files = {n: safetensors_bytes(100 * KB, seed=10 + i) for i, n in enumerate("abcd")}
    urls = {n: server.add(f"/{n}.safetensors", d) for n, d in files.items()}
    clock = Clock()
    cache = make_cache(tmp_path, budget_bytes=250 * KB, clock=clock)

    def src(n: str) -> ModelSource:
        return source(urls[n], files[n], name=n)

    await cache.fetch(src("a"))
    await cache.fetch(src("b"))
    cache.touch([sha(files["a"])])  # a used again: b is now the least recently used
    await cache.fetch(src("c"))
    assert sorted(cache.names_on_disk()) == ["a", "c"]
    assert not (
        tmp_path / "cache" / "blobs" / sha(files["b"])[:2] / f"{sha(files['b'])}.safetensors"
    ).exists()

    with cache.pinned([sha(files["a"])]):  # a is older than c, but a job needs it
        await cache.fetch(src("d"))
        assert sorted(cache.names_on_disk()) == ["a", "d"]
    assert cache.used_bytes <= 250 * KB
    await cache.aclose()

    # the use order survives a restart: a (older) goes before d
    again = make_cache(tmp_path, budget_bytes=250 * KB, clock=clock)
    await again.fetch(src("b"))
    assert sorted(again.names_on_disk()) == ["b", "d"]
    await again.aclose()


async def test_one_model_larger_than_the_budget_is_still_fetched(tmp_path: Path, server: FileServer) -> None:
    data = safetensors_bytes(200 * KB, seed=20)
    url = server.add("/huge.safetensors", data)
    cache = make_cache(tmp_path, budget_bytes=50 * KB)
    assert await cache.fetch(source(url, data)) is not None
    await cache.aclose()


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "a/../../b", "..", "lora/./x", "..\\..\\x", "C:evil", "a\x00b"],
)
async def test_names_that_look_like_paths_are_refused(tmp_path: Path, server: FileServer, name: str) -> None:
    data = safetensors_bytes(64 * KB, seed=30)
    url = server.add("/m.safetensors", data)
    cache = make_cache(tmp_path)
    with pytest.raises(ModelUnavailable) as err:
        await cache.fetch(source(url, data, name=name))
    assert err.value.field == "name" and not err.value.retryable
    assert server.count("/m.safetensors") == 0
    await cache.aclose()


async def test_files_are_named_by_sha_whatever_the_name_and_symlinks_are_not_trusted(
    tmp_path: Path, server: FileServer
) -> None:
    assert check_name("styles/anime v2 (final)") == "styles/anime v2 (final)"
    data = safetensors_bytes(64 * KB, seed=31)
    digest = sha(data)
    url = server.add("/m.safetensors", data)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(data)
    planted = tmp_path / "cache" / "blobs" / digest[:2] / f"{digest}.safetensors"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside)  # someone planted a link out of the cache: never served
    cache = make_cache(tmp_path)
    with pytest.raises(ModelUnavailable):  # not a sha256: never a path component
        await cache.fetch(ModelSource(name="x", kind="lora", source=url, sha256="../../" + "a" * 58, size=1))
    planted.unlink()
    path = await cache.fetch(source(url, data, name="styles/../../x".replace("../../", "")))
    assert path is not None and path.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert not path.is_symlink() and path.name == f"{digest}.safetensors"
    await cache.aclose()


async def test_pickle_checkpoints_are_refused_unless_allowed(tmp_path: Path, server: FileServer) -> None:
    data = b"\x80\x04 pretend pickle" * 100
    url = server.add("/model.ckpt", data)
    cache = make_cache(tmp_path)
    with pytest.raises(ModelUnavailable, match="pickle") as err:
        await cache.fetch(source(url, data, kind="checkpoint"))
    assert not err.value.retryable and server.count("/model.ckpt") == 0
    # a format hidden behind the URL (Civitai-style): the Content-Disposition gives it away
    hidden = server.add(
        "/api/download/1", data, headers={"content-disposition": 'attachment; filename="m.pt"'}
    )
    with pytest.raises(ModelUnavailable, match="pickle"):
        await cache.fetch(source(hidden, data, kind="checkpoint"))
    # served as "safetensors" but it is not: refused after the download, not handed to the engine
    disguised = server.add("/disguised", data)
    with pytest.raises(ModelUnavailable, match="safetensors format"):
        await cache.fetch(source(disguised, data, kind="checkpoint"))
    await cache.aclose()

    allowed = make_cache(tmp_path, allow_pickle=True)
    path = await allowed.fetch(source(url, data, kind="checkpoint"))
    assert path is not None and path.suffix == ".ckpt" and path.read_bytes() == data
    await allowed.aclose()


async def test_private_addresses_are_refused_unless_the_operator_allows_them(
    tmp_path: Path, server: FileServer
) -> None:
    data = safetensors_bytes(32 * KB, seed=40)
    url = server.add("/m.safetensors", data)
    cache = make_cache(tmp_path, allow_private_urls=False)
    with pytest.raises(ModelUnavailable, match="SDFLEET_WORKER_ALLOW_PRIVATE_MODEL_URLS") as err:
        await cache.fetch(source(url, data))
    assert not err.value.retryable and server.count("/m.safetensors") == 0
    await cache.aclose()


async def test_redirects_are_followed_without_taking_the_token_to_another_host(
    tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdfleet.models import sources

    other = FileServer()  # the "CDN" the download API redirects to: another origin
    try:
        data = safetensors_bytes(64 * KB, seed=50)
        target = other.add("/cdn/file.safetensors", data)
        server.add("/api/download/models/7", b"", redirect=target)
        monkeypatch.setattr(sources, "CIVITAI_BASE", server.base + "/api/download/models")
        cache = make_cache(tmp_path, civitai_token="secret-token")
        path = await cache.fetch(source("civitai://version/7", data))
        assert path is not None and path.read_bytes() == data
        assert server.hits_for("/api/download/models/7")[0].authorization == "Bearer secret-token"
        assert other.hits_for("/cdn/file.safetensors")[0].authorization is None
        await cache.aclose()
    finally:
        other.close()


async def test_local_sources_are_used_in_place_after_their_hash_is_checked(tmp_path: Path) -> None:
    data = safetensors_bytes(64 * KB, seed=60)
    local = tmp_path / "models" / "mine.safetensors"
    local.parent.mkdir()
    local.write_bytes(data)
    cache = make_cache(tmp_path)
    model = ModelSource(name="mine", kind="checkpoint", source=str(local), sha256=sha(data), size=len(data))
    assert await cache.fetch(model) == local
    assert await cache.fetch(model.model_copy(update={"source": f"file://{local}"})) == local
    assert "mine" in cache.names_on_disk()
    assert cache.shas_on_disk() == []  # not copied into the cache
    local.write_bytes(data[:-1] + b"!")  # changed under us: refused, and left alone
    os.utime(local, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    with pytest.raises(ModelUnavailable, match="does not match") as err:
        await cache.fetch(model)
    assert err.value.retryable and local.exists()
    missing = model.model_copy(update={"source": str(tmp_path / "nope.safetensors")})
    assert await cache.fetch(missing) is None  # not on this worker: the engine decides
    await cache.aclose()


# --------------------------------------------------------------------------------------------- s3://


async def test_s3_sources_are_presigned_by_the_orchestrator(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests.support.services import S3Server

    s3: S3Server = request.getfixturevalue("s3_server")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", s3.access_key)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    from sdfleet.api.routes.worker_models import model_source
    from sdfleet.blobs.s3 import S3BlobStore

    store = S3BlobStore(s3.url("blobs"))
    data = safetensors_bytes(256 * KB, seed=70)
    key = f"models/{sha(data)[:8]}/lora.safetensors"
    await asyncio.to_thread(store.client.put_object, Bucket=s3.bucket, Key=key, Body=data)
    record = ModelRecord(
        name="s3lora",
        kind=ModelKind.LORA,
        arch="sd1",
        source=f"s3://{s3.bucket}/{key}",
        sha256=sha(data),
        size=len(data),
    )
    ctx: Any = SimpleNamespace(blobs=store)
    given = model_source(ctx, record)
    assert given.url and given.url.startswith(s3.endpoint) and given.problem is None

    # the claim's URL has expired by the time the worker fetches: it asks for a fresh one, once
    expired = given.model_copy(update={"url": store.presign_object(s3.bucket, key, 1)})
    await asyncio.sleep(2.1)
    asked: list[str] = []

    async def refresh(name: str) -> ModelSource:
        asked.append(name)
        return model_source(ctx, record)

    cache = make_cache(tmp_path, allow_private_urls=False, refresh_url=refresh)  # presigned: not guarded
    path = await cache.fetch(expired)
    assert path is not None and path.read_bytes() == data
    assert asked == ["s3lora"]
    await cache.aclose()
    await store.close()


def test_s3_sources_need_an_object_store_behind_the_orchestrator(tmp_path: Path) -> None:
    from sdfleet.api.routes.worker_models import model_source

    record = ModelRecord(
        name="x", kind=ModelKind.LORA, arch=None, source="s3://bucket/x.safetensors", sha256="a" * 64, size=1
    )
    given = model_source(SimpleNamespace(blobs=object()), record)  # type: ignore[arg-type]
    assert given.url is None and given.problem and "SDFLEET_BLOB_URL" in given.problem
