"""Outputs of a held job: image encoding (infotext in the PNG ``parameters`` chunk, EXIF
UserComment for JPEG/WebP) and upload (:class:`Uploader`: inline with ``complete`` when the blob
store is the orchestrator's local one, else PUT to the signed URL, renewed once when it expired)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdfleet.engine.base import GeneratedImage
from sdfleet.errors import SdfleetError
from sdfleet.wire import EXIF_IFD, EXIF_USER_COMMENT, OutputItem, UploadRequest, UploadTarget
from sdfleet.worker.client import WorkerClient
from sdfleet.worker.held import HeldJob, WorkerStats

log = logging.getLogger("sdfleet.worker")

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(slots=True)
class EncodedOutput:
    """One encoded output image, ready to upload."""

    index: int
    data: bytes
    content_type: str
    seed: int
    infotext: str


FAST_PNG_PIXELS = 4 * 1024 * 1024
"""Above this many pixels PNGs are written at zlib level 1 (large upscales)."""


def encode_image(
    image: Image.Image, infotext: str, content_type: str = "image/png", quality: int = 95
) -> bytes:
    """Encode one image with its infotext: PNG ``parameters`` text chunk (plus any other text the
    engine attached in ``image.info``), or EXIF UserComment for JPEG/WebP (as A1111 does)."""
    buf = io.BytesIO()
    if content_type == "image/png":
        meta = PngInfo()
        meta.add_text("parameters", infotext)
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str) and key != "parameters":
                meta.add_text(key, value)
        # zlib's default level spends seconds on a 16-megapixel upscale for a few percent of size
        level = 1 if image.width * image.height > FAST_PNG_PIXELS else 6
        image.save(buf, format="PNG", pnginfo=meta, compress_level=level)
    else:
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\x00" + infotext.encode("utf-16-be")
        fmt = "JPEG" if content_type == "image/jpeg" else "WEBP"
        rgb = image.convert("RGB") if fmt == "JPEG" else image
        rgb.save(buf, format=fmt, quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def encode_png(image: Image.Image) -> bytes:
    """A plain PNG, no infotext (training's validation images)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_all(
    images: list[GeneratedImage], types: dict[int, str], default_type: str, quality: int
) -> list[EncodedOutput]:
    """Encode every generated image, each as its upload target's content type (else the default)."""
    out = []
    for index, img in enumerate(images):
        ct = types.get(index, default_type)
        out.append(
            EncodedOutput(
                index, encode_image(img.image, img.infotext, ct, quality), ct, img.seed, img.infotext
            )
        )
    return out


class Uploader:
    """Turns encoded outputs into the ``OutputItem`` list of a completion.

    Up to ``inline_max_bytes`` an output rides inline with ``complete`` when the target is the
    orchestrator's own (local blob store), unless that server refused inline data once
    (``inline_allowed``); else it is PUT to its target, at most ``upload_concurrency`` at once.
    """

    def __init__(
        self,
        worker_id: str,
        client: WorkerClient,
        stats: WorkerStats,
        *,
        inline_max_bytes: int,
        upload_concurrency: int,
    ) -> None:
        self.worker_id = worker_id
        self.client = client
        self.stats = stats
        self.inline_max_bytes = inline_max_bytes
        self.inline_allowed = True
        self._slots = asyncio.Semaphore(max(1, upload_concurrency))

    async def items(
        self, job: HeldJob, outputs: list[EncodedOutput], targets: dict[int, UploadTarget], *, inline: bool
    ) -> list[OutputItem]:
        """Upload (or inline) every output of ``job``, concurrently."""
        items = await asyncio.gather(*(self._item(job, o, targets.get(o.index), inline) for o in outputs))
        return list(items)

    async def _item(
        self, job: HeldJob, out: EncodedOutput, target: UploadTarget | None, inline: bool
    ) -> OutputItem:
        sha = hashlib.sha256(out.data).hexdigest()
        common: dict[str, Any] = {
            "index": out.index,
            "content_type": out.content_type,
            "size": len(out.data),
            "sha256": sha,
            "seed": out.seed,
            "infotext": out.infotext[:65536],
        }
        if target is None:
            target = await self.client.upload_target(self._upload_request(job, out))
        if inline and WorkerClient.is_local(target.url) and len(out.data) <= self.inline_max_bytes:
            return OutputItem(key=target.key, data_b64=base64.b64encode(out.data).decode(), **common)
        async with self._slots:
            if job.should_stop():
                return OutputItem(key=target.key, **common)
            try:
                await self.client.put_blob(target.url, out.data, target.content_type, headers=target.headers)
            except SdfleetError as exc:
                if exc.status not in (401, 403):
                    raise
                # the signed URL expired (a long outage): ask for a fresh one, once
                log.info("job.upload_renew job_id=%s index=%d", job.id, out.index)
                fresh = await self.client.upload_target(self._upload_request(job, out))
                await self.client.put_blob(fresh.url, out.data, fresh.content_type, headers=fresh.headers)
                target = fresh
        self.stats.bytes_uploaded += len(out.data)
        return OutputItem(key=target.key, **common)

    def _upload_request(self, job: HeldJob, out: EncodedOutput) -> UploadRequest:
        return UploadRequest(
            worker_id=self.worker_id,
            job_id=job.id,
            epoch=job.epoch,
            index=out.index,
            content_type=out.content_type,
        )


__all__ = ["CONTENT_TYPES", "EncodedOutput", "Uploader", "encode_all", "encode_image", "encode_png"]
