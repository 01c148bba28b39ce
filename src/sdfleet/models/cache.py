"""The worker's model cache: registry models fetched on demand, kept on disk by sha256.

Layout under the cache directory (nothing in it is ever named after a model)::

    blobs/<sha[:2]>/<sha256><suffix>           the verified file (.safetensors, or a pickle suffix if allowed)
    blobs/<sha[:2]>/<sha256><suffix>.sha256    "<sha256> <size> <mtime_ns>": the engine's hash sidecar
    partial/<sha256>.part                      a download in progress (resumed with HTTP Range)
    index.json                                 size, last use and registry names of every blob

- **Verified**: a download is hashed while it streams; a sha256 that differs from the registry's
  deletes the file and raises a retryable :class:`~sdfleet.errors.ModelUnavailable`. Only verified
  files are moved (atomically) into ``blobs/``.
- **Budget**: blobs are kept under ``budget_bytes``; when a new one needs room, the least recently
  used ones go first (last use persisted in ``index.json``, so the order survives restarts), never
  a pinned one (what the current and prefetched jobs need: :meth:`ModelCache.pin`) nor one being
  downloaded. A single model larger than the whole budget is still fetched (with a warning).
- **Shared downloads**: concurrent requests for one sha256 await one download.
- **Resumable**: an interrupted transfer is retried from where it stopped (``Range: bytes=N-``);
  a server that ignores Range (200) restarts it from zero. A ``.part`` left by a stopped worker is
  resumed by the next one.
- **Local sources** (an absolute path or ``file://``) are used in place, not copied: their sha256
  is checked once per (path, size, mtime) — or read from the engine's ``<file>.sha256`` sidecar —
  and a mismatch is a retryable error that leaves the file alone (it is not ours to delete). A local
  source missing on this worker is skipped (the engine may serve the name as its default model).
- **Guarded**: user-supplied URLs (``http(s)``, ``hf://``, ``civitai://`` and their redirects) go
  through the private-address guard unless ``allow_private_urls``; presigned ``s3://`` URLs come
  from the orchestrator and are not guarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from sdfleet.errors import ModelUnavailable, ValidationError
from sdfleet.filehash import hash_prefix, read_sidecar, sha256_file, sidecar_path, write_sidecar
from sdfleet.models.progress import PROGRESS_MIN_BYTES, DownloadBars
from sdfleet.models.sources import (
    KNOWN_SUFFIXES,
    PICKLE_SUFFIXES,
    SAFE_SUFFIX,
    Fetch,
    check_name,
    check_sha256,
    check_suffix,
    plan_fetch,
    safetensors_header_ok,
    suffix_of,
)
from sdfleet.netguard import check_url_syntax, guarded_transport
from sdfleet.wire import ModelSource

log = logging.getLogger("sdfleet.models")

GB = 1024**3
PROGRESS_LOG_SECONDS = 30.0
MAX_REDIRECTS = 8
WRITE_BUFFER = 4 * 1024 * 1024
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_BLOB = re.compile(r"^([0-9a-f]{64})(\.[a-z]+)$")
_NAMES_PER_BLOB = 16
PRIVATE_SETTING = "SDFLEET_WORKER_ALLOW_PRIVATE_MODEL_URLS"

RefreshUrl = Callable[[str], Awaitable[ModelSource]]
"""Ask the orchestrator again for a model's download URL (presigned URLs expire)."""


class _Retry(Exception):
    """A transfer problem worth another attempt (connection lost, truncated body, 5xx)."""


class _Expired(Exception):
    """A presigned URL was refused (401/403): ask the orchestrator for a fresh one."""


@dataclass(slots=True)
class CacheEntry:
    """One verified blob: its sha256, suffix, size, last use (epoch seconds) and registry names."""

    sha256: str
    suffix: str
    size: int
    last_used: float
    names: list[str] = field(default_factory=list)


class ModelCache:
    """Content-addressed, verified, size-bounded model files for one worker (see the module doc).

    ``fetch(model)`` returns the local path of a registry model (downloading and verifying it if
    needed); ``pin``/``unpin`` (or ``with cache.pinned(shas)``) keep blobs from eviction;
    ``names_on_disk()``/``shas_on_disk()`` say what is here, for warm-set reporting. Nothing touches
    the disk until first use."""

    def __init__(
        self,
        root: Path,
        *,
        budget_bytes: int,
        allow_pickle: bool = False,
        allow_private_urls: bool = False,
        hf_token: str | None = None,
        civitai_token: str | None = None,
        refresh_url: RefreshUrl | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 5,
        retry_base: float = 0.5,
        progress: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self.allow_pickle = allow_pickle
        self.allow_private_urls = allow_private_urls
        self.hf_token = hf_token
        self.civitai_token = civitai_token
        self.refresh_url = refresh_url
        self.retries = retries
        self.retry_base = retry_base
        self.progress = progress
        self.clock = clock
        self.downloads = 0  # transfers started (requests to a model source), for tests and stats
        self._transport = transport
        self._http: httpx.AsyncClient | None = None  # presigned URLs from the orchestrator
        self._guarded_http: httpx.AsyncClient | None = None  # user-supplied URLs
        self._entries: dict[str, CacheEntry] = {}
        self._pins: Counter[str] = Counter()
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._local: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) → sha256 checked
        self._local_names: dict[str, Path] = {}
        self._loaded = False
        self._real_root: Path | None = None
        self._bars = DownloadBars(progress)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ModelCache:
        """From :class:`~sdfleet.config.WorkerSettings` (``cache_dir``, ``cache_gb``, tokens, switches)."""
        return cls(
            Path(settings.cache_dir),
            budget_bytes=int(settings.cache_gb * GB),
            allow_pickle=settings.allow_pickle,
            allow_private_urls=settings.allow_private_model_urls,
            hf_token=settings.hf_token,
            civitai_token=settings.civitai_token,
            **kwargs,
        )

    # ------------------------------------------------------------------ what is here
    def shas_on_disk(self) -> list[str]:
        """sha256 of every verified blob in the cache (newest use first)."""
        self._load()
        return [e.sha256 for e in sorted(self._entries.values(), key=lambda e: -e.last_used)]

    def names_on_disk(self) -> list[str]:
        """Registry names of the models on this worker's disk: cached blobs (names as last seen in
        claims, kept across restarts in ``index.json``) and verified local files."""
        self._load()
        names: dict[str, None] = {}
        for entry in sorted(self._entries.values(), key=lambda e: -e.last_used):
            names.update(dict.fromkeys(entry.names))
        names.update(dict.fromkeys(self._local_names))
        return list(names)

    @property
    def used_bytes(self) -> int:
        self._load()
        return sum(e.size for e in self._entries.values())

    def path_for(self, sha256: str) -> Path | None:
        """The verified blob of ``sha256``, if the cache has it."""
        self._load()
        entry = self._entries.get(sha256)
        if entry is None:
            return None
        path = self._blob_path(entry.sha256, entry.suffix)
        return path if self._present(path) else None

    # ------------------------------------------------------------------ pins
    def pin(self, shas: Iterable[str | None]) -> list[str]:
        """Keep these blobs from eviction until :meth:`unpin` (counted: pins nest). Returns what was
        pinned, to hand back to :meth:`unpin`."""
        pinned = [s for s in dict.fromkeys(shas) if s]
        self._pins.update(pinned)
        return pinned

    def unpin(self, shas: Iterable[str]) -> None:
        for sha in shas:
            self._pins[sha] -= 1
            if self._pins[sha] <= 0:
                del self._pins[sha]

    @contextlib.contextmanager
    def pinned(self, shas: Iterable[str | None]) -> Iterator[list[str]]:
        held = self.pin(shas)
        try:
            yield held
        finally:
            self.unpin(held)

    def touch(self, shas: Iterable[str | None]) -> None:
        """Mark blobs as used now (LRU order)."""
        self._load()
        now = self.clock()
        changed = False
        for sha in shas:
            entry = self._entries.get(sha or "")
            if entry is not None:
                entry.last_used = now
                changed = True
        if changed:
            self._save()

    # ------------------------------------------------------------------ fetching
    async def fetch_all(self, models: Sequence[ModelSource]) -> dict[tuple[str, str], Path]:
        """Fetch every model (concurrently); ``{(kind, name): path}`` for those now on disk."""
        paths = await asyncio.gather(*(self.fetch(m) for m in models))
        return {(m.kind, m.name): p for m, p in zip(models, paths, strict=True) if p is not None}

    async def fetch(self, model: ModelSource) -> Path | None:
        """The local file of ``model``: from the cache, downloaded and verified, or (local sources)
        the file itself. None when a local source is not on this machine."""
        self._load()
        try:
            name = check_name(model.name)
        except ValidationError as exc:
            raise ModelUnavailable(str(exc), retryable=False, field="name") from exc
        if model.problem and not model.url:
            raise ModelUnavailable(f"{name}: {model.problem}", retryable=True)
        plan = plan_fetch(
            model.source,
            url=model.url,
            allow_pickle=self.allow_pickle,
            hf_token=self.hf_token,
            civitai_token=self.civitai_token,
        )
        if plan.path is not None:
            return await self._use_local(name, model.sha256, plan.path)
        sha = check_sha256(model.sha256)
        found = self.path_for(sha)
        if found is not None:
            self._remember(sha, name)
            log.debug("model.cache.hit name=%s sha256=%s", name, sha[:12])
            return found
        task = self._inflight.get(sha)
        if task is None:
            task = asyncio.create_task(self._download(model, plan, sha, name), name=f"model-{sha[:12]}")
            self._inflight[sha] = task
            task.add_done_callback(functools.partial(self._download_done, sha))
        else:
            log.info("model.download.shared name=%s sha256=%s", name, sha[:12])
        path = await asyncio.shield(task)
        self._remember(sha, name)
        return path

    def _download_done(self, sha: str, task: asyncio.Task[Path]) -> None:
        if self._inflight.get(sha) is task:
            del self._inflight[sha]
        if not task.cancelled():
            task.exception()  # retrieved: a waiter may have gone away

    def _client(self, guarded: bool) -> httpx.AsyncClient:
        """The HTTP client for user-supplied URLs (``guarded``: through the private-address guard)
        or for the orchestrator's presigned ones (the injected ``transport``, if any)."""
        if guarded:
            if self._guarded_http is None:
                self._guarded_http = httpx.AsyncClient(
                    transport=guarded_transport(
                        allow_private=self.allow_private_urls, field="source", setting=PRIVATE_SETTING
                    ),
                    timeout=httpx.Timeout(60.0, connect=15.0),
                    headers={"user-agent": "sdfleet-worker"},
                    follow_redirects=False,
                    trust_env=False,
                )
            return self._guarded_http
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(60.0, connect=15.0),
                headers={"user-agent": "sdfleet-worker"},
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        """Stop downloads in flight (their ``.part`` files stay, to be resumed) and close."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in (self._http, self._guarded_http):
            if client is not None:
                await client.aclose()
        self._http = self._guarded_http = None

    # ------------------------------------------------------------------ local sources
    async def _use_local(self, name: str, sha: str | None, path: Path) -> Path | None:
        stat = _stat(path)
        if stat is None:
            log.info("model.local.missing name=%s path=%s", name, path)
            return None
        if _is_dir(path):  # a diffusers folder (``sdfleet up --model DIR``): no single file to hash
            self._local_names[name] = path
            return path
        check_suffix(path.suffix.lower(), allow_pickle=self.allow_pickle, what=path.name)
        if sha:
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            digest = self._local.get(key) or read_sidecar(path, stat.st_size, stat.st_mtime_ns)
            if digest is None:
                started = time.monotonic()
                digest = await asyncio.to_thread(sha256_file, path)
                log.info("model.local.hashed name=%s seconds=%.2f", name, time.monotonic() - started)
            if digest != sha.lower():
                self._local_names.pop(name, None)
                raise ModelUnavailable(
                    f"{name}: {path} does not match the registry's sha256 (it has {digest[:12]}…, the "
                    f"registry says {sha[:12]}…)",
                    retryable=True,
                )
            self._local[key] = digest
        self._local_names[name] = path
        return path

    # ------------------------------------------------------------------ downloads
    async def _download(self, model: ModelSource, plan: Fetch, sha: str, name: str) -> Path:
        size = model.size
        self._make_room(size or 0, keep={sha})
        part = self._partial_path(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        resume_from = part.stat().st_size if part.exists() else 0
        started = time.monotonic()
        log.info(
            "model.download.start name=%s sha256=%s size=%s host=%s resume_from=%d",
            name,
            sha[:12],
            size,
            plan.host,
            resume_from,
        )
        url = plan.url
        assert url is not None
        headers = dict(plan.headers)
        refreshed = False
        attempt = 0
        while True:
            try:
                digest, suffix = await self._transfer(url, headers, part, size, plan, name)
                break
            except _Expired as exc:
                if refreshed or self.refresh_url is None:
                    raise ModelUnavailable(
                        f"{name}: the download URL was refused ({exc})", retryable=True
                    ) from exc
                log.info("model.download.renew_url name=%s sha256=%s", name, sha[:12])
                fresh = await self.refresh_url(model.name)
                if not fresh.url:
                    raise ModelUnavailable(
                        f"{name}: {fresh.problem or 'no download URL'}", retryable=True
                    ) from exc
                url, refreshed = fresh.url, True
            except _Retry as exc:
                attempt += 1
                if attempt > self.retries:
                    log.error("model.download.failed name=%s sha256=%s error=%s", name, sha[:12], exc)
                    raise ModelUnavailable(
                        f"{name}: download failed after {attempt} attempts: {exc}", retryable=True
                    ) from exc
                delay = min(30.0, self.retry_base * 2 ** (attempt - 1))
                log.warning(
                    "model.download.retry name=%s sha256=%s attempt=%d delay=%.1f error=%s",
                    name,
                    sha[:12],
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
        actual = part.stat().st_size
        if digest != sha:
            part.unlink(missing_ok=True)
            log.error(
                "model.verify.mismatch name=%s expected=%s got=%s bytes=%d",
                name,
                sha[:12],
                digest[:12],
                actual,
            )
            raise ModelUnavailable(
                f"{name}: sha256 mismatch (the registry says {sha[:12]}…, the download is {digest[:12]}…); "
                "the file was deleted",
                retryable=True,
            )
        if suffix == SAFE_SUFFIX and not await asyncio.to_thread(safetensors_header_ok, part):
            part.unlink(missing_ok=True)
            raise ModelUnavailable(
                f"{name}: the file is not in the safetensors format (pickle checkpoints need "
                "SDFLEET_WORKER_ALLOW_PICKLE=true and a .ckpt/.pt source)",
                retryable=False,
            )
        final = self._blob_path(sha, suffix)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        stat = final.stat()
        with contextlib.suppress(OSError):
            write_sidecar(final, sha, stat.st_size, stat.st_mtime_ns)
        self._entries[sha] = CacheEntry(sha, suffix, stat.st_size, self.clock(), [name])
        self._save()
        self._make_room(0, keep={sha})
        seconds = time.monotonic() - started
        log.info(
            "model.download.done name=%s sha256=%s bytes=%d seconds=%.2f mb_per_s=%.1f",
            name,
            sha[:12],
            actual,
            seconds,
            (actual - resume_from) / 1e6 / max(seconds, 1e-6),
        )
        return final

    async def _transfer(
        self, url: str, headers: dict[str, str], part: Path, size: int | None, plan: Fetch, name: str
    ) -> tuple[str, str]:
        """One attempt: fetch what ``part`` lacks. Returns (sha256 of the whole file, suffix)."""
        have = _file_size(part)
        if size is not None and have > size:
            _remove(part)
            have = 0
        hasher = await asyncio.to_thread(hash_prefix, part, have) if have else hashlib.sha256()
        if size is not None and have == size and have > 0:
            return hasher.hexdigest(), plan.suffix
        wanted = dict(headers)
        if have:
            wanted["range"] = f"bytes={have}-"
        self.downloads += 1
        response = await self._open(url, wanted, plan.guarded)
        try:
            status = response.status_code
            if status == 206:
                start = _range_start(response.headers.get("content-range"))
                if start != have:
                    _remove(part)
                    raise _Retry(f"the server sent bytes from {start}, not {have}")
                mode = "ab"
            elif status == 200:
                if have:
                    log.info("model.download.restart name=%s reason=range_ignored had=%d", name, have)
                    have, hasher = 0, hashlib.sha256()
                mode = "wb"
            elif status == 416:
                _remove(part)
                raise _Retry("range not satisfiable")
            elif status in (401, 403) and not plan.guarded:
                raise _Expired(f"HTTP {status}")
            elif status in _RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status}")
            else:
                raise ModelUnavailable(
                    f"{name}: the source answered HTTP {status}", retryable=status not in (404, 410)
                )
            suffix = plan.suffix
            named = _disposition_suffix(response.headers.get("content-disposition"))
            if named is not None and named != suffix:
                if named in PICKLE_SUFFIXES and not self.allow_pickle:
                    raise ModelUnavailable(
                        f"{name}: the source serves a pickle checkpoint ({named}) and this worker refuses "
                        "them (SDFLEET_WORKER_ALLOW_PICKLE)",
                        retryable=False,
                    )
                suffix = named
            length = response.headers.get("content-length")
            total = (
                size if size is not None else (have + int(length) if length and length.isdigit() else None)
            )
            await self._stream(response, part, mode, have, total, size, hasher, name)
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()
        got = _file_size(part)
        if size is not None and got < size:
            raise _Retry(f"the transfer ended at {got} of {size} bytes")
        return hasher.hexdigest(), suffix

    async def _stream(
        self,
        response: httpx.Response,
        part: Path,
        mode: str,
        have: int,
        total: int | None,
        size: int | None,
        hasher: Any,
        name: str,
    ) -> None:
        bar = self._bars.start(name, total, have)
        last_log = time.monotonic()
        buffer = bytearray()
        fh = await asyncio.to_thread(part.open, mode)
        try:
            async for chunk in response.aiter_bytes():
                have += len(chunk)
                if size is not None and have > size:
                    raise ModelUnavailable(
                        f"{name}: the source sends more than the registry's {size} bytes", retryable=True
                    )
                hasher.update(chunk)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await asyncio.to_thread(fh.write, bytes(buffer))
                    buffer.clear()
                if bar is not None:
                    self._bars.update(bar, have)
                elif (
                    total
                    and total >= PROGRESS_MIN_BYTES
                    and time.monotonic() - last_log > PROGRESS_LOG_SECONDS
                ):
                    last_log = time.monotonic()
                    log.info("model.download.progress name=%s bytes=%d of=%d", name, have, total)
        except ModelUnavailable:
            buffer.clear()
            fh.close()
            _remove(part)
            raise
        finally:
            if not fh.closed:
                if buffer:  # what arrived before a cut is good data: keep it for the resume
                    await asyncio.to_thread(fh.write, bytes(buffer))
                fh.close()
            self._bars.stop(bar)

    async def _open(self, url: str, headers: dict[str, str], guarded: bool) -> httpx.Response:
        """GET ``url`` (streamed), following redirects by hand so every hop passes the guard and
        credentials never follow a redirect to another host. Guarded hops go through a transport
        that connects only to the addresses it checked (no second DNS lookup)."""
        for _ in range(MAX_REDIRECTS + 1):
            client = self._client(guarded)
            try:
                if guarded:
                    check_url_syntax(url, "source")
                request = client.build_request("GET", url, headers=headers)
                response = await client.send(request, stream=True)
            except ValidationError as exc:
                raise ModelUnavailable(str(exc), retryable=False, field="source") from exc
            except httpx.TransportError as exc:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            location = response.headers.get("location")
            if response.is_redirect and location:
                await response.aclose()
                target = urljoin(url, location)
                if _origin(target) != _origin(url):
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                url = target
                continue
            return response
        raise ModelUnavailable(f"too many redirects fetching from {urlsplit(url).hostname}", retryable=False)

    # ------------------------------------------------------------------ budget
    def _make_room(self, incoming: int, keep: set[str]) -> None:
        used = sum(e.size for e in self._entries.values())
        if used + incoming <= self.budget_bytes:
            return
        candidates = sorted(
            (
                e
                for e in self._entries.values()
                if e.sha256 not in self._pins and e.sha256 not in self._inflight and e.sha256 not in keep
            ),
            key=lambda e: e.last_used,
        )
        for entry in candidates:
            if used + incoming <= self.budget_bytes:
                break
            self._delete(entry)
            used -= entry.size
            log.info(
                "model.cache.evict sha256=%s names=%s bytes=%d",
                entry.sha256[:12],
                ",".join(entry.names),
                entry.size,
            )
        if used + incoming > self.budget_bytes:
            log.warning(
                "model.cache.over_budget used=%d incoming=%d budget=%d pinned=%d",
                used,
                incoming,
                self.budget_bytes,
                len(self._pins),
            )
        self._save()

    def _delete(self, entry: CacheEntry) -> None:
        path = self._blob_path(entry.sha256, entry.suffix)
        for p in (path, sidecar_path(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._entries.pop(entry.sha256, None)

    # ------------------------------------------------------------------ paths and the index
    def _inside(self, path: Path) -> Path:
        """``path`` if it resolves inside the cache directory (no symlink or ``..`` out of it)."""
        assert self._real_root is not None
        real = path.resolve(strict=False)
        if not real.is_relative_to(self._real_root):
            raise ModelUnavailable(f"refusing a cache path outside {self.root}: {path}", retryable=False)
        return path

    def _blob_path(self, sha: str, suffix: str) -> Path:
        sha = check_sha256(sha)
        if suffix not in KNOWN_SUFFIXES:
            raise ModelUnavailable(f"unsupported model format {suffix!r}", retryable=False)
        return self._inside(self.root / "blobs" / sha[:2] / f"{sha}{suffix}")

    def _partial_path(self, sha: str) -> Path:
        return self._inside(self.root / "partial" / f"{check_sha256(sha)}.part")

    def _present(self, path: Path) -> bool:
        try:
            return path.is_file() and not path.is_symlink()
        except OSError:
            return False

    def _remember(self, sha: str, name: str) -> None:
        """``name`` is now this blob (a name moves when the registry points it at another file)."""
        changed = False
        for entry in self._entries.values():
            if entry.sha256 != sha and name in entry.names:
                entry.names.remove(name)
                changed = True
        current = self._entries.get(sha)
        if current is not None:
            current.last_used = self.clock()
            if name not in current.names:
                current.names = [name, *current.names][:_NAMES_PER_BLOB]
            changed = True
        if changed:
            self._save()

    def _load(self) -> None:
        if self._loaded:
            return
        self._real_root = self.root.resolve()
        self._loaded = True
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return  # nothing here yet (directories are made by the first download)
        recorded: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
                recorded = data["blobs"]
        for shard in blobs.iterdir():
            if not shard.is_dir() or shard.is_symlink() or not re.fullmatch(r"[0-9a-f]{2}", shard.name):
                continue
            for path in shard.iterdir():
                match = _BLOB.match(path.name)
                if (
                    match is None
                    or path.is_symlink()
                    or not path.is_file()
                    or match.group(2) not in KNOWN_SUFFIXES
                ):
                    continue
                sha, suffix = match.groups()
                if sha[:2] != shard.name:
                    continue
                stat = path.stat()
                raw = recorded.get(sha)
                info: dict[str, Any] = raw if isinstance(raw, dict) else {}
                names = [n for n in info.get("names", []) if isinstance(n, str)]
                last = info.get("last_used")
                self._entries[sha] = CacheEntry(
                    sha,
                    suffix,
                    stat.st_size,
                    float(last) if isinstance(last, int | float) else stat.st_mtime,
                    names[:_NAMES_PER_BLOB],
                )
        log.debug(
            "model.cache.loaded dir=%s blobs=%d bytes=%d", self.root, len(self._entries), self.used_bytes
        )

    def _save(self) -> None:
        data = {
            "version": 1,
            "blobs": {
                e.sha256: {"suffix": e.suffix, "size": e.size, "last_used": e.last_used, "names": e.names}
                for e in self._entries.values()
            },
        }
        index = self.root / "index.json"
        tmp = index.with_name(f"index.json.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, index)
        except OSError as exc:
            log.warning("model.cache.index_unwritable dir=%s error=%s", self.root, exc)


# ===================================================================== helpers


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _is_dir(path: Path) -> bool:
    return path.is_dir()


def _file_size(path: Path) -> int:
    """Size of ``path`` (0 when it does not exist)."""
    stat = _stat(path)
    return stat.st_size if stat is not None else 0


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", content_range or "")
    return int(match.group(1)) if match else None


def _disposition_suffix(value: str | None) -> str | None:
    """The checkpoint suffix of a ``Content-Disposition`` file name, if it names a known one."""
    if not value:
        return None
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", value, re.IGNORECASE)
    return suffix_of(match.group(1)) if match else None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


__all__ = ["GB", "CacheEntry", "ModelCache", "RefreshUrl"]
