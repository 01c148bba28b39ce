"""HMAC-signed orchestrator URLs for blobs (local-directory profile): :class:`UrlSigner` makes them and
:func:`verify_signed` is the one check every route that serves or receives a blob through such a URL uses
(``GET /v1/blobs/{key}``, ``PUT /v1/worker/blobs/{key}``).

A signature is URL-safe base64 of an HMAC-SHA256 over the method, the key and the expiry. Whatever a
caller puts in ``sig`` — any Unicode text once the query string is decoded — is compared as bytes in
constant time, so a signature that is not even ASCII is a plain 403, never an error of the comparison.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from sdfleet.errors import Forbidden

__all__ = ["MAX_SIGNATURE_LENGTH", "UrlSigner", "verify_signed"]

MAX_SIGNATURE_LENGTH = 100
"""Longer than any signature :class:`UrlSigner` makes (43 characters); routes bound the parameter by it."""


class UrlSigner:
    """HMAC signatures for orchestrator-served blob URLs (local-directory profile)."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def sign(self, method: str, key: str, expires_at: int) -> str:
        """The signature of ``method`` on ``key`` until ``expires_at`` (Unix seconds)."""
        return self.signature_bytes(method, key, expires_at).decode("ascii")

    def signature_bytes(self, method: str, key: str, expires_at: int) -> bytes:
        """:meth:`sign`, as the ASCII bytes a signature is compared as."""
        msg = f"{method.upper()}\n{key}\n{expires_at}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")


def verify_signed(
    signer: UrlSigner, method: str, key: str, expires_at: int, signature: str, *, now: float | None = None
) -> None:
    """Check a signed blob URL: a :class:`~sdfleet.errors.Forbidden` (403) naming ``exp`` when the link has
    expired, naming ``sig`` when the signature is not the one for this method, key and expiry — including a
    signature that is too long or holds characters no signature has (non-ASCII, lone surrogates)."""
    if expires_at < (time.time() if now is None else now):
        raise Forbidden("this link has expired", field="exp")
    given = signature.encode("utf-8", "surrogatepass")[: MAX_SIGNATURE_LENGTH + 1]
    if not hmac.compare_digest(signer.signature_bytes(method, key, expires_at), given):
        raise Forbidden("bad link signature", field="sig")
