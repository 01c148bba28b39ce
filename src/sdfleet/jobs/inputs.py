"""Input images (img2img init images, inpainting masks, training images, ``/v1/inputs`` uploads): clients send
them inline (base64, with or without a ``data:`` prefix) or upload them first; the API stores each once,
content-addressed, and the job refers to it as ``blob:inputs/<tenant>/<sha256>.<ext>``. Workers get signed
URLs for them with the claim.

Every image is checked here, the one place images enter, before a job that uses it is stored: it must
really be a PNG, JPEG or WebP file (Pillow identifies it; magic bytes are not enough), its width × height
(read from the header, before a single pixel is decoded, so a decompression bomb costs nothing) and its
frame count must be within the limits, and then every frame is decoded in full, so truncated or corrupt
data is a 422 at submit and never reaches a worker (where it would fail the job on worker after worker).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from sdfleet.blobs import BlobStore
from sdfleet.config import Limits
from sdfleet.domain import GenerationSpec
from sdfleet.errors import LimitExceeded, NotFound, ValidationError
from sdfleet.specs.training import LoraTrainSpec

BLOB_REF = "blob:"
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)
_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),  # a JPEG with more pictures (phone cameras write these)
    "WEBP": ("webp", "image/webp"),
}
_CONTENT_KEY = re.compile(r"/([0-9a-f]{64})\.[a-z]+$")
"""A content-addressed input key's digest (``inputs/<tenant>/<sha256>.<ext>``)."""
_OPENERS = ("PNG", "JPEG", "WEBP")  # Pillow's plugins tried (JPEG's also opens MPO files)
_DECODE_SLOTS = threading.BoundedSemaphore(4)
"""Images decoded at once in this process: bounds the memory full decodes take (up to ~4 × the pixel limit)."""


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """The bounds one input image is held to."""

    max_bytes: int
    max_pixels: int
    max_frames: int

    @classmethod
    def generation(cls, limits: Limits) -> ImageLimits:
        """Init images and masks of generation jobs (native and A1111)."""
        return cls(limits.max_upload_bytes, limits.max_input_pixels, limits.max_input_frames)

    @classmethod
    def training(cls, limits: Limits) -> ImageLimits:
        """Training images and ``/v1/inputs`` uploads (photos, larger)."""
        return cls(limits.max_train_image_bytes, limits.max_train_image_pixels, limits.max_input_frames)


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An image that passed :func:`check_image`: its bytes, what it really is, and its size."""

    data: bytes
    ext: str
    mime: str
    width: int
    height: int
    frames: int

    def key(self, tenant: str) -> str:
        """Its content-addressed blob key among ``tenant``'s inputs."""
        return f"inputs/{tenant}/{hashlib.sha256(self.data).hexdigest()}.{self.ext}"


def decode_base64(value: str, field: str, max_bytes: int) -> bytes:
    """Base64 (optionally a ``data:`` URL) → bytes; 4xx when it is not base64 or is over ``max_bytes``."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    if len(text) > max_bytes * 4 // 3 + 16:
        raise LimitExceeded(f"the image is larger than {max_bytes} bytes", field=field)
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("not valid base64 image data", field=field) from exc
    if len(data) > max_bytes:
        raise LimitExceeded(f"the image is larger than {max_bytes} bytes", field=field)
    return data


def check_image(data: bytes, field: str, limits: ImageLimits) -> CheckedImage:
    """Check image bytes (see the module docstring); 422 naming ``field`` when they do not pass."""
    if len(data) > limits.max_bytes:
        raise LimitExceeded(f"the image is larger than {limits.max_bytes} bytes", field=field)
    try:
        with Image.open(io.BytesIO(data), formats=_OPENERS) as image:
            fmt = str(image.format)
            width, height = image.size
            frames = int(getattr(image, "n_frames", 1))
            _check_size(width, height, frames, field, limits)  # from the header: nothing decoded yet
            image.verify()  # chunk checksums (PNG)
        with _DECODE_SLOTS, Image.open(io.BytesIO(data), formats=_OPENERS) as image:
            for index in range(frames):
                image.seek(index)
                image.load()
    except ValidationError:
        raise
    except Image.DecompressionBombError as exc:
        raise LimitExceeded(
            f"the image is larger than the limit of {limits.max_pixels} pixels", field=field
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValidationError("the image must be a PNG, JPEG or WebP file", field=field) from exc
    except Exception as exc:  # a decoder of untrusted bytes may fail any way at all: each means "broken"
        reason = str(exc)[:200] or type(exc).__name__
        raise ValidationError(f"the image does not decode ({reason})", field=field) from exc
    ext, mime = _FORMATS[fmt]
    return CheckedImage(data=data, ext=ext, mime=mime, width=width, height=height, frames=frames)


def _check_size(width: int, height: int, frames: int, field: str, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ValidationError(f"the image is {width}×{height} pixels", field=field)
    if width * height > limits.max_pixels:
        raise LimitExceeded(
            f"the image is {width}×{height} pixels, the limit is {limits.max_pixels} pixels", field=field
        )
    if frames > limits.max_frames:
        raise LimitExceeded(f"the image has {frames} frames, the limit is {limits.max_frames}", field=field)


def decode_image(value: str, field: str, limits: ImageLimits) -> CheckedImage:
    """Base64 (optionally a ``data:`` URL) → a checked image (:func:`check_image`)."""
    return check_image(decode_base64(value, field, limits.max_bytes), field, limits)


@dataclass(slots=True)
class InputImages:
    """The input images of one request (one job or a whole batch): each distinct image is checked once, and
    nothing is written until :meth:`store` — which the caller runs only after every job of the request has
    passed its checks, so a refused request stores nothing."""

    tenant: str
    blobs: BlobStore
    _pending: dict[str, CheckedImage] = field(default_factory=dict)
    _refs: dict[tuple[str, ImageLimits], str] = field(default_factory=dict)

    async def ref(self, value: str, field: str, limits: ImageLimits, *, check_stored: bool = True) -> str:
        """The ``blob:`` reference of one image: inline base64 / a ``data:`` URL, checked now and stored by
        :meth:`store`; or a ``blob:`` key of this tenant's inputs, which must exist (and, with
        ``check_stored``, is fetched and checked against ``limits`` too)."""
        cached = self._refs.get((value, limits))
        if cached is not None:
            return cached
        if value.startswith(BLOB_REF):
            ref = await self._stored(value, field, limits, check_stored)
        else:
            image = await asyncio.to_thread(decode_image, value, field, limits)
            key = image.key(self.tenant)
            self._pending.setdefault(key, image)
            ref = BLOB_REF + key
        self._refs[(value, limits)] = ref
        return ref

    async def sized_ref(self, value: str, field: str, limits: ImageLimits) -> tuple[str, int, int]:
        """Like :meth:`ref` (a stored input is fetched and checked too), with the image's width and height."""
        if value.startswith(BLOB_REF):
            ref = await self._stored(value, field, limits, False)
            image = await asyncio.to_thread(
                check_image, await self.blobs.get(ref[len(BLOB_REF) :]), field, limits
            )
        else:
            image = await asyncio.to_thread(decode_image, value, field, limits)
            key = image.key(self.tenant)
            self._pending.setdefault(key, image)
            ref = BLOB_REF + key
        self._refs[(value, limits)] = ref
        return ref, image.width, image.height

    async def _stored(self, value: str, field: str, limits: ImageLimits, check: bool) -> str:
        key = value[len(BLOB_REF) :]
        if not key.startswith(f"inputs/{self.tenant}/") or ".." in key or await self.blobs.size(key) is None:
            raise NotFound(f"no stored input {value!r}", field=field)
        if check:
            await asyncio.to_thread(check_image, await self.blobs.get(key), field, limits)
        return value

    async def describe(self, ref: str) -> tuple[str, int, int]:
        """The sha256 of the bytes behind a ``blob:`` reference :meth:`ref` returned, and the image's width and
        height (an image of this request from what was checked; a stored one from its key's digest — inputs are
        content-addressed — and its header)."""
        key = ref.removeprefix(BLOB_REF)
        pending = self._pending.get(key)
        if pending is not None:
            return hashlib.sha256(pending.data).hexdigest(), pending.width, pending.height
        data = await self.blobs.get(key)
        match = _CONTENT_KEY.search(key)
        digest = match.group(1) if match else hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return digest, width, height

    async def store(self) -> int:
        """Write the checked images not stored before; returns how many were written."""
        if not self._pending:
            return 0
        sizes = await self.blobs.sizes(list(self._pending))
        new = [
            (key, image.data, image.mime) for key, image in self._pending.items() if sizes.get(key) is None
        ]
        if new:
            await self.blobs.put_many(new)
        self._pending.clear()
        return len(new)


async def training_inputs(
    spec: LoraTrainSpec, inputs: InputImages, limits: ImageLimits, field_prefix: str = "params."
) -> LoraTrainSpec:
    """Training images (``images`` and ``class_images``): each ``ref`` a stored input (``blob:…``) or an
    inline image, checked now; returns the spec with ``blob:`` references only. Stored uploads were checked
    when they were uploaded (``/v1/inputs``), so they are not fetched again."""
    updates: dict[str, object] = {}
    for name in ("images", "class_images"):
        refs = getattr(spec, name)
        if refs:
            updates[name] = [
                image.model_copy(
                    update={
                        "ref": await inputs.ref(
                            image.ref, f"{field_prefix}{name}.{i}.ref", limits, check_stored=False
                        )
                    }
                )
                for i, image in enumerate(refs)
            ]
    return spec.model_copy(update=updates) if updates else spec


async def generation_inputs(
    spec: GenerationSpec, inputs: InputImages, limits: ImageLimits, field_prefix: str = "params."
) -> GenerationSpec:
    """Check the init images and mask of ``spec`` and return a spec that refers to them as ``blob:`` keys.
    References to inputs stored before must belong to the tenant, exist, and pass the generation limits."""
    updates: dict[str, object] = {}
    if spec.init_images:
        updates["init_images"] = [
            await inputs.ref(v, f"{field_prefix}init_images.{i}", limits)
            for i, v in enumerate(spec.init_images)
        ]
    if spec.mask:
        updates["mask"] = await inputs.ref(spec.mask, f"{field_prefix}mask", limits)
    units = []
    for i, unit in enumerate(spec.controlnet):
        if unit.enabled and unit.image is None and not spec.init_images:
            raise ValidationError(
                "a ControlNet unit needs an image (on img2img it may read the init image)",
                field=f"{field_prefix}controlnet.{i}.image",
            )
        if unit.enabled:
            refs = {}
            for key in ("image", "mask", "effective_region_mask"):
                value = getattr(unit, key)
                if value is not None:
                    refs[key] = await inputs.ref(value, f"{field_prefix}controlnet.{i}.{key}", limits)
            unit = unit.model_copy(update=refs) if refs else unit
        units.append(unit)
    if spec.controlnet:
        updates["controlnet"] = units
    return spec.model_copy(update=updates) if updates else spec


def input_refs(params: dict[str, Any]) -> list[str]:
    """Every ``blob:`` reference in a job's params."""
    refs = [v for v in params.get("init_images") or [] if isinstance(v, str) and v.startswith(BLOB_REF)]
    for key in ("mask", "image"):  # an inpainting mask; an upscale job's image
        value = params.get(key)
        if isinstance(value, str) and value.startswith(BLOB_REF):
            refs.append(value)
    for unit in params.get("controlnet") or []:  # ControlNet units' control images and masks
        for key in ("image", "mask", "effective_region_mask"):
            ref = unit.get(key) if isinstance(unit, dict) else None
            if isinstance(ref, str) and ref.startswith(BLOB_REF):
                refs.append(ref)
    for name in ("images", "class_images"):  # training jobs
        for image in params.get(name) or []:
            ref = image.get("ref") if isinstance(image, dict) else None
            if isinstance(ref, str) and ref.startswith(BLOB_REF):
                refs.append(ref)
    return list(dict.fromkeys(refs))
