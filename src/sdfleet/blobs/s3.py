"""Blob store on S3-compatible object storage (AWS S3, Cloudflare R2, MinIO, SeaweedFS, GCS's
S3 interoperability endpoint). Workers and clients get presigned URLs; the orchestrator never
proxies image bytes, and nobody but the orchestrator holds bucket credentials.

URL form: ``s3://bucket/prefix?endpoint=https://…&region=us-east-1&addressing=path``, plus
``public_endpoint=`` when clients reach the store under another name than the orchestrator and
workers do (download links are signed for it). Credentials come from the usual AWS chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, IAM roles).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

from sdfleet.blobs.base import check_key
from sdfleet.errors import ConfigError, Conflict, NotFound, PayloadTooLarge, ServiceUnavailable

MULTIPART_PART_BYTES = 64 * 1024 * 1024


class S3BlobStore:
    """Blobs as objects under ``prefix/`` in one bucket, through boto3 (run in threads)."""

    direct_upload = True

    def __init__(self, url: str, *, client: Any | None = None):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"not an s3:// URL: {url!r}", field="blob_url")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint = query.get("endpoint")
        self.region = query.get("region", "us-east-1")
        self.addressing = query.get("addressing", "path" if self.endpoint else "auto")
        self.client = client or self._client(self.endpoint)
        public = query.get("public_endpoint")
        self.public_client = self._client(public) if public else self.client

    def _client(self, endpoint: str | None) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "the s3 blob store needs boto3: pip install 'sdfleet[s3]'", field="blob_url"
            ) from exc
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": self.addressing},
                signature_version="s3v4",
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound("no such blob", field="key") from exc
        except self.client.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFound("no such blob", field="key") from exc
            raise ServiceUnavailable(f"object store error: {code or exc}") from exc

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self._call(
            "put_object", Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    async def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Store ``data`` unless an object is at ``key`` (a conditional ``If-None-Match: *`` PUT, so
        two writers cannot both win). False: the same bytes were there; other bytes: :class:`Conflict`."""
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=content_type,
                IfNoneMatch="*",
            )
            return True
        except self.client.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ServiceUnavailable(f"object store error: {code or exc}") from exc
        if await self.get(key) == data:
            return False
        raise Conflict("a blob is already stored at this key: it is never overwritten", field="key")

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, *, exclusive: bool = False
    ) -> int:
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"upload is larger than {max_bytes} bytes", field="body")
                spool.write(chunk)
            spool.seek(0)
            if exclusive:
                await self.put_new(key, spool.read())
                return size
            await asyncio.to_thread(self.client.upload_fileobj, spool, self.bucket, self._key(key))
        return size

    async def put_many(self, items: list[tuple[str, bytes, str]]) -> None:
        await asyncio.gather(*(self.put(key, data, ct) for key, data, ct in items))

    async def put_new_many(self, items: list[tuple[str, bytes, str]]) -> list[bool]:
        results = await asyncio.gather(
            *(self.put_new(key, data, ct) for key, data, ct in items), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            stored = [key for (key, _, _), r in zip(items, results, strict=True) if r is True]
            await asyncio.gather(*(self.delete(key) for key in stored), return_exceptions=True)
            raise failed[0]
        return [r is True for r in results]

    async def sizes(self, keys: list[str]) -> dict[str, int | None]:
        found = await asyncio.gather(*(self.size(k) for k in keys))
        return dict(zip(keys, found, strict=True))

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", Bucket=self.bucket, Key=self._key(key))
        body: bytes = await asyncio.to_thread(response["Body"].read)
        return body

    async def size(self, key: str) -> int | None:
        try:
            head = await self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return None
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self._key(key))

    def get_url(self, key: str, expires_in: float) -> str:
        url: str = self.public_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=int(expires_in)
        )
        return url

    def presign_object(self, bucket: str, key: str, expires_in: float) -> str:
        """A GET URL for any object these credentials can read, in any bucket (``s3://`` model
        sources), signed for the endpoint the orchestrator and workers use."""
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_in)
        )
        return url

    def put_url(self, key: str, expires_in: float, content_type: str) -> str:
        """A presigned PUT that only creates: ``If-None-Match: *`` is signed into it (see
        :meth:`put_headers`), so the holder of the URL can never replace an object at the key — not
        the accepted output, not even its own upload once it landed."""
        url: str = self.client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ContentType": content_type,
                "IfNoneMatch": "*",
            },
            ExpiresIn=int(expires_in),
        )
        return url

    def put_headers(self) -> dict[str, str]:
        """Headers a PUT to :meth:`put_url` must send (they are part of its signature)."""
        return {"If-None-Match": "*"}

    # ------------------------------------------------------------ multipart (large files)
    async def start_multipart(self, key: str, content_type: str = "application/octet-stream") -> str:
        """Begin a multipart upload; returns its id."""
        response = await self._call(
            "create_multipart_upload", Bucket=self.bucket, Key=self._key(key), ContentType=content_type
        )
        return str(response["UploadId"])

    def part_url(self, key: str, upload_id: str, part_number: int, expires_in: float) -> str:
        """A presigned ``PUT`` for one part (numbered from 1); the response's ETag identifies it."""
        url: str = self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "UploadId": upload_id,
                "PartNumber": part_number,
            },
            ExpiresIn=int(expires_in),
        )
        return url

    async def finish_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        """Assemble the parts (in order) into the object."""
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(etags)]
        await self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self._key(key),
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)

    async def close(self) -> None:
        return None
