"""Blob store on a local directory (embedded profile). Uploads and downloads go through the
orchestrator, with HMAC-signed URLs."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

from sdfleet.blobs.base import UrlSigner, check_key
from sdfleet.errors import Conflict, NotFound, PayloadTooLarge
from sdfleet.filehash import sha256_file


class LocalBlobStore:
    """Blobs as files under one root directory; writes are atomic (temp file + rename)."""

    direct_upload = False

    def __init__(self, root: Path, signer: UrlSigner):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"
        self.signer = signer

    def path(self, key: str) -> Path:
        # check_key refuses "..", empty and absolute parts, so the join cannot leave the root
        return self.root / check_key(key)

    def _write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(data)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
        os.replace(tmp, path)

    def _link_new(self, tmp: Path, path: Path) -> bool:
        """Give ``tmp`` the name ``path`` unless that exists (atomic: a hard link never replaces);
        True when it was stored, False when ``path`` already held exactly these bytes."""
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            if sha256_file(path) == sha256_file(tmp):
                return False
            raise Conflict(
                "a blob is already stored at this key: it is never overwritten", field="key"
            ) from None

    def _write_new(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new.tmp")
        try:
            tmp.write_bytes(data)
            return self._link_new(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    async def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Store ``data`` at ``key`` only if nothing is there yet. True: stored now; False: the same
        bytes were there already (a retry); :class:`Conflict` when other bytes are."""
        check_key(key)
        return await asyncio.to_thread(self._write_new, key, data)

    def _write_new_many(self, items: list[tuple[str, bytes, str]]) -> list[bool]:
        stored: list[bool] = []
        try:
            for key, data, _ in items:
                stored.append(self._write_new(key, data))
        except BaseException:
            for (key, _, _), new in zip(items, stored, strict=False):
                if new:
                    self.path(key).unlink(missing_ok=True)
            raise
        return stored

    async def put_new_many(self, items: list[tuple[str, bytes, str]]) -> list[bool]:
        """One thread hop for the whole batch (a completion batch's inline outputs)."""
        for key, _, _ in items:
            check_key(key)
        if not items:
            return []
        return await asyncio.to_thread(self._write_new_many, items)

    def _write_many(self, items: list[tuple[str, bytes, str]]) -> None:
        for key, data, _ in items:
            self._write(key, data)

    async def put_many(self, items: list[tuple[str, bytes, str]]) -> None:
        for key, _, _ in items:
            check_key(key)
        await asyncio.to_thread(self._write_many, items)

    def _sizes(self, keys: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for key in keys:
            try:
                out[key] = self.path(key).stat().st_size
            except FileNotFoundError:
                out[key] = None
        return out

    async def sizes(self, keys: list[str]) -> dict[str, int | None]:
        return self._sizes(keys) if len(keys) <= 4 else await asyncio.to_thread(self._sizes, keys)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if len(data) < 1 << 20:
            self._write(key, data)
        else:
            await asyncio.to_thread(self._write, key, data)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, *, exclusive: bool = False
    ) -> int:
        """Store a streamed body at ``key``; ``exclusive``: only if nothing is there yet (the same
        bytes again are fine, other bytes are a :class:`Conflict`)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        size = 0
        try:
            with tmp.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"upload is larger than {max_bytes} bytes", field="body")
                    fh.write(chunk)
            if exclusive:
                await asyncio.to_thread(self._link_new, tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    async def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound("no such blob", field="key") from exc

    async def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def _signed(self, prefix: str, method: str, key: str, expires_in: float) -> str:
        exp = int(time.time() + expires_in)
        sig = self.signer.sign(method, key, exp)
        return f"{prefix}/{quote(key)}?exp={exp}&sig={sig}"

    def get_url(self, key: str, expires_in: float) -> str:
        """A path on the orchestrator (relative: the caller joins it with the base URL it uses)."""
        return self._signed("/v1/blobs", "GET", check_key(key), expires_in)

    def put_url(self, key: str, expires_in: float, content_type: str) -> str:
        return self._signed("/v1/worker/blobs", "PUT", check_key(key), expires_in)

    def put_headers(self) -> dict[str, str]:
        """No extra headers: the orchestrator's upload route fences and never overwrites."""
        return {}

    async def close(self) -> None:
        return None
