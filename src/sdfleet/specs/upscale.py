"""The parameters of one ``upscale`` job (:class:`UpscaleSpec`): A1111's Extras tab, validated, without torch.

An upscale job makes one image bigger (and optionally restores its faces): a model upscaler
(ESRGAN / Real-ESRGAN / Compact, registered as ``kind: upscaler``) or a pixel resize (``Lanczos``,
``Nearest``), optionally blended with a second upscaler, to a size given as a factor (``scale_by``) or
a box (``scale_to``, optionally cropped to fill it). The size rules are A1111's
(:func:`extras_output_size`), so a client gets the sizes it gets from A1111.

The job system fills in what only it can know at submit: the input's size (``input_width`` /
``input_height``) and whether an upscaler needs a GPU-class worker (``needs_gpu``); whatever a client
sends in those fields is replaced.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
"""A1111's built-in upscalers that are a plain resize (``None``: no upscaler; the Lanczos resize to the
exact size still happens)."""

LATENT_UPSCALE_MODES: tuple[str, ...] = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
"""A1111's ``shared.latent_upscale_modes``: the hires-fix upscalers that work on latents."""

A1111_NAMES: dict[str, tuple[str, ...]] = {
    "R-ESRGAN 4x+": ("realesrgan_x4plus", "realesrgan-x4plus"),
    "R-ESRGAN 4x+ Anime6B": ("realesrgan_x4plus_anime_6b", "realesrgan-x4plus-anime"),
    "R-ESRGAN 2x+": ("realesrgan_x2plus",),
    "R-ESRGAN General 4xV3": ("realesr-general-x4v3",),
    "R-ESRGAN General WDN 4xV3": ("realesr-general-wdn-x4v3",),
    "R-ESRGAN AnimeVideo": ("realesr-animevideov3",),
    "ESRGAN_4x": ("esrgan_x4", "esrgan_4x", "rrdb_esrgan_x4"),
}
"""A1111's display names of the Real-ESRGAN models it downloads, by the file stems they ship under, so a file
registered under its own name still answers to the name A1111 clients send (``hr_upscaler: "R-ESRGAN 4x+"``).
Community ESRGAN models (``4x-UltraSharp``) keep their file stem, as A1111 lists them."""


def a1111_name(stem: str) -> str | None:
    """A1111's display name for a Real-ESRGAN file called ``stem`` (``RealESRGAN_x4plus`` → ``R-ESRGAN 4x+``),
    or None for a file A1111 lists under its own name."""
    key = stem.lower()
    for display, stems in A1111_NAMES.items():
        if key in stems:
            return display
    return None


MAX_FACTOR = 16.0
MAX_MODEL_PASSES = 3
"""A1111 applies a model at most three times on the way to the target size."""


def is_pixel_upscaler(name: str) -> bool:
    """Whether ``name`` is one of A1111's built-in resizes (case-insensitive, as A1111 looks them up)."""
    return name.lower() in {p.lower() for p in PIXEL_UPSCALERS}


def is_builtin_hires_upscaler(name: str) -> bool:
    """Whether a hires fix's ``hr_upscaler`` is built in (a latent mode or a resize), not a registry model."""
    return name in LATENT_UPSCALE_MODES or is_pixel_upscaler(name)


def model_target(width: int, height: int, factor: float) -> tuple[int, int]:
    """The size one upscaler brings an image to: ``factor`` × the size, each side floored to a multiple
    of 8 (A1111's ``Upscaler.upscale``), at least 8."""
    return (max(8, int(width * factor) // 8 * 8), max(8, int(height * factor) // 8 * 8))


def model_passes(width: int, height: int, target: tuple[int, int], scale: int) -> int:
    """How many times a ``scale``× model runs to reach ``target`` from ``width``×``height`` (A1111: until
    the target is reached, at most three times); the rest is a Lanczos resize."""
    if scale <= 1:
        return 1
    passes = 0
    w, h = width, height
    while passes < MAX_MODEL_PASSES and (w < target[0] or h < target[1]):
        w, h = w * scale, h * scale
        passes += 1
    return passes


class UpscaleSpec(BaseModel):
    """One upscale job: the image, how big to make it, with which upscalers, and face restoration.

    Field names follow A1111's ``/sdapi/v1/extra-single-image`` body where A1111 has one."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        min_length=1,
        description="The image: base64 or a data: URL (PNG, JPEG, WebP), or a stored input (blob:inputs/…)",
    )
    resize_mode: Literal["scale_by", "scale_to"] = Field(
        default="scale_by", description="scale_by: × upscaling_resize; scale_to: to upscaling_resize_w × _h"
    )
    upscaling_resize: float = Field(default=2.0, ge=1.0, le=MAX_FACTOR, description="The factor (scale_by)")
    upscaling_resize_w: int = Field(default=512, ge=8, le=16384, description="Target width (scale_to)")
    upscaling_resize_h: int = Field(default=512, ge=8, le=16384, description="Target height (scale_to)")
    upscaling_crop: bool = Field(
        default=True, description="scale_to: crop to exactly the target box (A1111: centred on it)"
    )
    upscaler_1: str = Field(
        default="Lanczos", min_length=1, max_length=200, description="An upscaler model's name, or a resize"
    )
    upscaler_2: str = Field(default="None", min_length=1, max_length=200)
    extras_upscaler_2_visibility: float = Field(
        default=0.0, ge=0.0, le=1.0, description="How much of upscaler_2's result is blended in"
    )
    gfpgan_visibility: float = Field(default=0.0, ge=0.0, le=1.0)
    codeformer_visibility: float = Field(default=0.0, ge=0.0, le=1.0)
    codeformer_weight: float = Field(
        default=0.0, ge=0.0, le=1.0, description="CodeFormer's fidelity (0: most restored, 1: most faithful)"
    )
    upscale_first: bool = Field(default=False, description="Upscale before restoring faces")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_quality: int = Field(default=95, ge=1, le=100)
    # filled in at submit by the job system
    input_width: int = Field(default=0, ge=0, description="Set by the server: the input's width")
    input_height: int = Field(default=0, ge=0, description="Set by the server: the input's height")
    needs_gpu: bool = Field(default=False, description="Set by the server: an upscaler is GPU-class")
    face_restorers: dict[Literal["gfpgan", "codeformer"], str] = Field(
        default_factory=dict,
        max_length=2,
        description="Set by the server: family → the registered face restorer the visibilities use",
    )
    face_detector: str | None = Field(
        default=None,
        max_length=200,
        description="Set by the server: a registered face detector (YuNet); OpenCV's Haar cascade otherwise",
    )

    @field_validator("image", "upscaler_1", "upscaler_2")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @property
    def model_names(self) -> list[str]:
        """The upscalers that are registry models (not resizes), in order, once each."""
        names = [self.upscaler_1]
        if self.extras_upscaler_2_visibility > 0:
            names.append(self.upscaler_2)
        return list(dict.fromkeys(n for n in names if not is_pixel_upscaler(n)))

    def output_size(self, width: int | None = None, height: int | None = None) -> tuple[int, int]:
        """The size of the result for an input of ``width``×``height`` (default: the recorded input).
        With ``upscaler_1`` ``None`` the image keeps its size (A1111 skips the upscale step)."""
        w, h = width or self.input_width, height or self.input_height
        if self.upscaler_1.lower() == "none":
            return (w, h)
        return extras_output_size(
            w,
            h,
            mode=self.resize_mode,
            factor=self.upscaling_resize,
            box=(self.upscaling_resize_w, self.upscaling_resize_h),
            crop=self.upscaling_crop,
        )


class UpscaleBatchSpec(BaseModel):
    """Several pictures upscaled alike (A1111's ``extra-batch-images``): a parent job with one ``upscale``
    child per picture, on as many workers as are free; its outputs are the children's, in order."""

    model_config = ConfigDict(extra="forbid")

    images: list[UpscaleSpec] = Field(min_length=1, max_length=1000)


def extras_factor(width: int, height: int, mode: str, factor: float, box: tuple[int, int]) -> float:
    """The factor an upscaler is asked for: ``factor`` (scale_by) or the larger of the box's ratios (scale_to,
    so the result covers the box — A1111's rule)."""
    if mode == "scale_to":
        return max(box[0] / width, box[1] / height)
    return factor


def extras_output_size(
    width: int, height: int, *, mode: str, factor: float, box: tuple[int, int], crop: bool
) -> tuple[int, int]:
    """A1111's Extras size rules: the upscaler's target is the factor × the size floored to ÷8 on each
    side; ``scale_to`` with ``crop`` then cuts (or pads) that to exactly the box, centred."""
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}×{height} pixels")
    if mode == "scale_to" and crop:
        return box
    by = extras_factor(width, height, mode, factor, box)
    if not math.isfinite(by) or by <= 0:
        raise ValueError(f"an upscale factor of {by}")
    return model_target(width, height, by)


__all__ = [
    "A1111_NAMES",
    "LATENT_UPSCALE_MODES",
    "MAX_FACTOR",
    "PIXEL_UPSCALERS",
    "UpscaleBatchSpec",
    "UpscaleSpec",
    "a1111_name",
    "extras_factor",
    "extras_output_size",
    "is_builtin_hires_upscaler",
    "is_pixel_upscaler",
    "model_passes",
    "model_target",
]
