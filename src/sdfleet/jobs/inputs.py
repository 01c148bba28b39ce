"""Input images (img2img init images, inpainting masks): clients send them inline (base64, with or
without a ``data:`` prefix); the API stores each once, content-addressed, and the job refers to it
as ``blob:inputs/<tenant>/<sha256>.<ext>``. Workers get signed URLs for them with the claim."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from sdfleet.blobs import BlobStore
from sdfleet.domain import GenerationSpec
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.training.config import LoraTrainSpec

BLOB_REF = "blob:"
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": ("png", "image/png"),
    b"\xff\xd8\xff": ("jpg", "image/jpeg"),
    b"RIFF": ("webp", "image/webp"),
}


def decode_image(value: str, field: str, max_bytes: int) -> tuple[bytes, str, str]:
    """Base64 (optionally a ``data:`` URL) → (bytes, extension, content type); 4xx when it is not
    a PNG, JPEG or WebP image or is over the limit."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    if len(text) > max_bytes * 4 // 3 + 16:
        raise LimitExceeded(f"the image is larger than {max_bytes} bytes", field=field)
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("not valid base64 image data", field=field) from exc
    for magic, (ext, mime) in _MAGIC.items():
        if data.startswith(magic) and (ext != "webp" or data[8:12] == b"WEBP"):
            return data, ext, mime
    raise ValidationError("the image must be a PNG, JPEG or WebP file", field=field)


async def store_input(value: str, tenant: str, blobs: BlobStore, max_bytes: int, field: str) -> str:
    """One image reference: a ``blob:`` key of this tenant's inputs (must exist), or inline base64 /
    a ``data:`` URL, stored once (content-addressed) — returns its ``blob:`` reference."""
    if value.startswith(BLOB_REF):
        key = value[len(BLOB_REF) :]
        if not key.startswith(f"inputs/{tenant}/") or ".." in key or await blobs.size(key) is None:
            raise NotFound(f"no stored input {value!r}", field=field)
        return value
    data, ext, mime = decode_image(value, field, max_bytes)
    key = f"inputs/{tenant}/{hashlib.sha256(data).hexdigest()}.{ext}"
    if await blobs.size(key) is None:
        await blobs.put(key, data, mime)
    return BLOB_REF + key


async def store_training_inputs(
    spec: LoraTrainSpec, tenant: str, blobs: BlobStore, max_bytes: int, field_prefix: str = "params."
) -> LoraTrainSpec:
    """Training images (``images`` and ``class_images``): each ``ref`` a stored input (``blob:…``) or an
    inline image, stored now; returns the spec with ``blob:`` references only."""
    updates: dict[str, object] = {}
    for name in ("images", "class_images"):
        refs = getattr(spec, name)
        if refs:
            updates[name] = [
                image.model_copy(
                    update={
                        "ref": await store_input(
                            image.ref, tenant, blobs, max_bytes, f"{field_prefix}{name}.{i}.ref"
                        )
                    }
                )
                for i, image in enumerate(refs)
            ]
    return spec.model_copy(update=updates) if updates else spec


async def store_inputs(
    spec: GenerationSpec, tenant: str, blobs: BlobStore, max_bytes: int, field_prefix: str = "params."
) -> GenerationSpec:
    """Store inline images of ``spec`` and return a spec that refers to them. References to
    inputs stored before (``blob:…``) must belong to ``tenant`` and exist."""

    async def resolve(value: str, field: str) -> str:
        return await store_input(value, tenant, blobs, max_bytes, field)

    updates: dict[str, object] = {}
    if spec.init_images:
        updates["init_images"] = [
            await resolve(v, f"{field_prefix}init_images.{i}") for i, v in enumerate(spec.init_images)
        ]
    if spec.mask:
        updates["mask"] = await resolve(spec.mask, f"{field_prefix}mask")
    return spec.model_copy(update=updates) if updates else spec


def input_refs(params: dict[str, Any]) -> list[str]:
    """Every ``blob:`` reference in a job's params."""
    refs = [v for v in params.get("init_images") or [] if isinstance(v, str) and v.startswith(BLOB_REF)]
    mask = params.get("mask")
    if isinstance(mask, str) and mask.startswith(BLOB_REF):
        refs.append(mask)
    for name in ("images", "class_images"):  # training jobs
        for image in params.get(name) or []:
            ref = image.get("ref") if isinstance(image, dict) else None
            if isinstance(ref, str) and ref.startswith(BLOB_REF):
                refs.append(ref)
    return list(dict.fromkeys(refs))
