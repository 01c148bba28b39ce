"""The blob store contract: where images, uploads and checkpoints live.

Workers never hold storage credentials: they get URLs. With an object store those are presigned
URLs of the store itself; with a local directory they are orchestrator paths signed with an HMAC
(:class:`~sdfleet.blobs.signing.UrlSigner`), served by the API's blob routes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Protocol

from sdfleet.blobs.signing import UrlSigner
from sdfleet.errors import ValidationError

__all__ = ["BlobStore", "UrlSigner", "check_key"]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,511}$")


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or confuse a URL."""
    if not _KEY.match(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValidationError(f"invalid blob key {key!r}", field="key")
    return key


class BlobStore(Protocol):
    """Bytes by key, plus URLs that let someone else read or write one key for a while."""

    url: str

    @property
    def direct_upload(self) -> bool:
        """True when workers upload straight to the store (presigned), False when through us."""
        ...

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, *, exclusive: bool = False
    ) -> int:
        """Store a streamed body; ``exclusive``: never replace what is stored (same bytes: fine)."""
        ...

    async def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Store ``data`` unless something is at ``key``: True stored now, False the same bytes were
        there; :class:`sdfleet.errors.Conflict` when other bytes are (nothing is ever overwritten)."""
        ...

    async def put_many(self, items: list[tuple[str, bytes, str]]) -> None:
        """Store several (key, data, content type) at once."""
        ...

    async def put_new_many(self, items: list[tuple[str, bytes, str]]) -> list[bool]:
        """:meth:`put_new` for several (key, data, content type) at once, one result each. All or
        nothing: when one raises, what this call stored is deleted before the error goes on."""
        ...

    async def get(self, key: str) -> bytes: ...

    async def size(self, key: str) -> int | None: ...

    async def sizes(self, keys: list[str]) -> dict[str, int | None]:
        """Sizes of several keys (None: missing)."""
        ...

    async def delete(self, key: str) -> None: ...

    def get_url(self, key: str, expires_in: float) -> str: ...

    def put_url(self, key: str, expires_in: float, content_type: str) -> str: ...

    def put_headers(self) -> dict[str, str]:
        """Headers a PUT to a :meth:`put_url` URL must carry (signed into presigned URLs)."""
        ...

    async def close(self) -> None: ...
