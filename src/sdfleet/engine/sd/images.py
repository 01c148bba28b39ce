"""Pixels in and around the engine: image references, A1111's resize modes, inpainting masks and
overlays, and cheap latent previews.

The inpainting helpers follow A1111's ``processing.py`` / ``masking.py``: the mask is binarised, inverted
on request and blurred; "only masked" crops the masked region (plus padding, grown to the output's aspect
ratio) and works at full resolution there; "fill" pre-fills the masked area with blurred surroundings;
and at the end the generated pixels are composited over the original through the blurred mask, so
every pixel outside it is exactly the original.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from sdfleet.engine.base import open_input_image
from sdfleet.errors import InvalidInput

ImageRef = str | Image.Image
ImageResolver = Callable[[ImageRef, str], Image.Image]
"""``resolver(reference, field) -> PIL image``; raises :class:`ValidationError` naming ``field``."""

# A1111's "Approx cheap" latent → RGB matrices (sd_vae_approx.cheap_approximation).
SD_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_LATENT_RGB = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)


def default_resolver(ref: ImageRef, field: str) -> Image.Image:
    """Resolve a PIL image, a ``data:`` URL, a base64 string or a local file path to an image."""
    if isinstance(ref, Image.Image):
        return ref
    text = ref.strip()
    data: bytes | None = None
    if text.startswith("data:"):
        _, _, payload = text.partition(",")
        data = _b64(payload, field)
    elif len(text) > 512 or not _looks_like_path(text):
        data = _b64(text, field)
    if data is None:
        path = Path(text)
        if not path.is_file():
            raise InvalidInput(f"{field}: no such image file {text!r}", field=field)
        data = path.read_bytes()
    return open_input_image(data, field)


def inline_resolver(ref: ImageRef, field: str) -> Image.Image:
    """Like :func:`default_resolver` but never reads local files: what a worker uses, so a job
    cannot make it open files of the machine it runs on."""
    if (
        isinstance(ref, str)
        and not ref.strip().startswith("data:")
        and _looks_like_path(ref.strip())
        and len(ref.strip()) <= 512
    ):
        raise InvalidInput(f"{field}: images must be sent inline (base64), not as paths", field=field)
    return default_resolver(ref, field)


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text or "\\" in text or Path(text).suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    )


def _b64(payload: str, field: str) -> bytes:
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{field}: invalid base64 image data", field=field) from exc


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB, with any transparency composited over ``background`` (A1111's ``images.flatten``)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return image.convert("RGB")


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's ``resize_image``: 0 just resize, 1 crop and resize, 2 resize and fill (3 is handled in latent
    space by the caller and resizes like 0 here)."""
    lanczos = Image.Resampling.LANCZOS
    if mode in (0, 3):
        return image.resize((width, height), lanczos) if image.size != (width, height) else image
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = image.resize((src_w, src_h), lanczos)
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    src_w = width if ratio < src_ratio else image.width * height // image.height
    src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = image.resize((src_w, src_h), lanczos)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_h = height // 2 - src_h // 2
        if fill_h > 0:
            out.paste(resized.resize((width, fill_h), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(
                resized.resize((width, fill_h), box=(0, resized.height, width, resized.height)),
                box=(0, fill_h + src_h),
            )
    elif ratio > src_ratio:
        fill_w = width // 2 - src_w // 2
        if fill_w > 0:
            out.paste(resized.resize((fill_w, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(
                resized.resize((fill_w, height), box=(resized.width, 0, resized.width, height)),
                box=(fill_w + src_w, 0),
            )
    return out


# ------------------------------------------------------------------------------------------ inpainting


@dataclass(slots=True)
class InpaintPlan:
    """Everything an inpainting job needs, prepared in pixel space.

    ``image`` is what gets encoded (already cropped/resized to the generation size, pre-filled for
    "fill"); ``latent_mask`` the generation-size mask (white = repaint) used for the latent blend;
    ``overlay_base`` the original image at output size and ``overlay_mask`` the blurred mask through
    which generated pixels are composited over it; ``paste_box`` where a full-resolution crop goes back.
    """

    image: Image.Image
    latent_mask: Image.Image
    overlay_base: Image.Image
    overlay_mask: Image.Image
    paste_box: tuple[int, int, int, int] | None


def binary_mask(mask: Image.Image) -> Image.Image:
    """The repaint mask as "L": RGBA masks use alpha, others luminance; rounded at 128 as A1111 does."""
    if mask.mode in ("RGBA", "LA") or (mask.mode == "P" and "transparency" in mask.info):
        mask = mask.convert("RGBA").split()[-1]
    return mask.convert("L").point(lambda v: 255 if v > 127 else 0)


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Gaussian blur of the mask (A1111 blurs with sigma = mask_blur)."""
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int]:
    """Bounding box of the non-zero mask grown by ``padding`` (A1111's ``get_crop_region``)."""
    box = mask.getbbox()
    if box is None:
        return (0, 0, mask.width, mask.height)
    x1, y1, x2, y2 = box
    return (
        max(x1 - padding, 0),
        max(y1 - padding, 0),
        min(x2 + padding, mask.width),
        min(y2 + padding, mask.height),
    )


def expand_crop_region(
    region: tuple[int, int, int, int], width: int, height: int, image_w: int, image_h: int
) -> tuple[int, int, int, int]:
    """Grow ``region`` to the aspect ratio ``width:height`` within the image (A1111's ``expand_crop_region``)."""
    x1, y1, x2, y2 = region
    ratio_crop = (x2 - x1) / max(y2 - y1, 1)
    ratio_processing = width / height
    if ratio_crop > ratio_processing:
        desired = (x2 - x1) / ratio_processing
        diff = int(desired - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_h:
            diff = y2 - image_h
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        y2 = min(y2, image_h)
    else:
        desired = (y2 - y1) * ratio_processing
        diff = int(desired - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_w:
            diff = x2 - image_w
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        x2 = min(x2, image_w)
    return x1, y1, x2, y2


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill": replace the masked area by progressively less blurred surroundings."""
    result = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def plan_inpaint(
    image: Image.Image,
    mask: Image.Image,
    *,
    width: int,
    height: int,
    resize_mode: int,
    mask_blur: int,
    invert: bool,
    full_res: bool,
    padding: int,
    fill: int,
) -> InpaintPlan:
    """Prepare an inpainting job the way A1111's ``StableDiffusionProcessingImg2Img.init`` does."""
    image = flatten(image)
    mask = binary_mask(mask)
    if invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, mask_blur)
    if full_res:
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.LANCZOS)
        overlay_mask = mask
        region = expand_crop_region(crop_region(mask, padding), width, height, mask.width, mask.height)
        x1, y1, x2, y2 = region
        latent_mask = resize_image(2, mask.crop(region).convert("RGB"), width, height).convert("L")
        overlay_base = image
        work = resize_image(2, image.crop(region), width, height)
        paste_box: tuple[int, int, int, int] | None = (x1, y1, x2 - x1, y2 - y1)
    else:
        latent_mask = resize_image(resize_mode, mask.convert("RGB"), width, height).convert("L")
        doubled = np.clip(np.asarray(latent_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
        overlay_mask = Image.fromarray(doubled, mode="L")
        work = image if resize_mode == 3 else resize_image(resize_mode, image, width, height)
        overlay_base = work
        paste_box = None
    if fill == 0:
        work = fill_masked(work, latent_mask)
    return InpaintPlan(work, latent_mask, overlay_base, overlay_mask, paste_box)


def apply_overlay(generated: Image.Image, plan: InpaintPlan) -> Image.Image:
    """Put the generated pixels back over the original through the blurred mask (A1111's ``apply_overlay``)."""
    if plan.paste_box is not None:
        x, y, w, h = plan.paste_box
        canvas = plan.overlay_base.copy()
        canvas.paste(resize_image(1, generated, w, h), (x, y))
        generated = canvas
    elif generated.size != plan.overlay_base.size:
        generated = generated.resize(plan.overlay_base.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), plan.overlay_base.convert("RGB"), plan.overlay_mask)


# ------------------------------------------------------------------------------------------ previews


def latent_preview(latent: Any, sdxl: bool, max_side: int = 128) -> Image.Image:
    """A cheap preview of one latent [4, h, w] through A1111's linear latent → RGB approximation."""
    import torch

    coefs = torch.tensor(SDXL_LATENT_RGB if sdxl else SD_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("lxy,lr->rxy", latent.detach().float().cpu(), coefs)
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array, mode="RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return image
