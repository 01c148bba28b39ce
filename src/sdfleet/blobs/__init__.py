"""Blob stores: a local directory (embedded) or an S3-compatible object store (scale-out)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from sdfleet.blobs.base import BlobStore, UrlSigner, check_key
from sdfleet.blobs.local import LocalBlobStore
from sdfleet.blobs.signing import verify_signed
from sdfleet.errors import ConfigError


def open_blob_store(url: str, signer: UrlSigner) -> BlobStore:
    """Build the blob store a URL names: ``file:///dir`` (or a plain path), or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(parsed.path if parsed.scheme else url), signer)
    if parsed.scheme == "s3":
        from sdfleet.blobs.s3 import S3BlobStore

        return S3BlobStore(url)
    raise ConfigError(
        f"unsupported blob store URL {url!r}: use file:///path or s3://bucket/prefix", field="blob_url"
    )


__all__ = ["BlobStore", "LocalBlobStore", "UrlSigner", "check_key", "open_blob_store", "verify_signed"]
