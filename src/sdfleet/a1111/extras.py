"""A1111's Extras API (``/sdapi/v1/extra-single-image``, ``/sdapi/v1/extra-batch-images``): the request and
response bodies as A1111 1.10 has them, and the mapping of a request onto upscale jobs
(:class:`~sdfleet.specs.upscale.UpscaleSpec`, one job per image so a batch spreads over the fleet).

Plain pydantic, no I/O: the route in ``api/routes/a1111_extras.py`` submits the jobs and waits for them.
"""

from __future__ import annotations

import html
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sdfleet.errors import ValidationError
from sdfleet.specs.upscale import UpscaleSpec

__all__ = [
    "ExtrasBatchImagesRequest",
    "ExtrasBatchImagesResponse",
    "ExtrasImage",
    "ExtrasRequest",
    "ExtrasSingleImageRequest",
    "ExtrasSingleImageResponse",
    "extras_html_info",
    "extras_specs",
]


class ExtrasRequest(BaseModel):
    """A1111's ``ExtrasBaseRequest``: how to upscale, with what, and face restoration. Unknown fields are
    ignored, as A1111 does."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: Literal[0, 1] = Field(
        default=0, description="0: scale by upscaling_resize; 1: scale to _w × _h"
    )
    show_extras_results: bool = Field(default=True, description="Return the images (False: html_info only)")
    gfpgan_visibility: float = Field(default=0.0, ge=0.0, le=1.0)
    codeformer_visibility: float = Field(default=0.0, ge=0.0, le=1.0)
    codeformer_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    upscaling_resize: float = Field(default=2.0, ge=1.0, le=8.0)
    upscaling_resize_w: int = Field(default=512, ge=1)
    upscaling_resize_h: int = Field(default=512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0.0, ge=0.0, le=1.0)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasRequest):
    """``POST /sdapi/v1/extra-single-image``."""

    image: str = Field(default="", description="Base64 (or a data: URL) of the image")


class ExtrasImage(BaseModel):
    """One entry of ``imageList`` (A1111's ``FileData``)."""

    model_config = ConfigDict(extra="ignore")

    data: str = Field(description="Base64 (or a data: URL) of the image")
    name: str = Field(default="", max_length=500, description="File name (shown in html_info)")


class ExtrasBatchImagesRequest(ExtrasRequest):
    """``POST /sdapi/v1/extra-batch-images``."""

    imageList: list[ExtrasImage] = Field(default_factory=list)  # A1111's field name


class ExtrasSingleImageResponse(BaseModel):
    """The answer of ``extra-single-image``."""

    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    """The answer of ``extra-batch-images``."""

    html_info: str
    images: list[str]


def extras_specs(request: ExtrasRequest, images: list[str], *, field: str) -> list[UpscaleSpec]:
    """One :class:`UpscaleSpec` per image of the request; ``field`` names the images in errors
    (``image`` or ``imageList``). A1111's ``None`` as upscaler 1 means "no upscale"."""
    if not images:
        raise ValidationError("no image given", field=field)
    common: dict[str, Any] = {
        "resize_mode": "scale_to" if request.resize_mode == 1 else "scale_by",
        "upscaling_resize": request.upscaling_resize,
        "upscaling_resize_w": max(8, min(16384, request.upscaling_resize_w)),
        "upscaling_resize_h": max(8, min(16384, request.upscaling_resize_h)),
        "upscaling_crop": request.upscaling_crop,
        "upscaler_1": request.upscaler_1 or "None",
        "upscaler_2": request.upscaler_2 or "None",
        "extras_upscaler_2_visibility": request.extras_upscaler_2_visibility,
        "gfpgan_visibility": request.gfpgan_visibility,
        "codeformer_visibility": request.codeformer_visibility,
        "codeformer_weight": request.codeformer_weight,
        "upscale_first": request.upscale_first,
    }
    for name in ("upscaler_1", "upscaler_2"):
        value = common[name]
        if len(value) > 200 or "\x00" in value:
            raise ValidationError(f"could not find upscaler named {value[:80]!r}", field=name)
    specs = []
    for index, image in enumerate(images):
        where = field if field == "image" else f"{field}.{index}.data"
        if not image:
            raise ValidationError("the image is empty", field=where)
        specs.append(UpscaleSpec(image=image, **common))
    return specs


def extras_html_info(spec: UpscaleSpec, notes: list[str], name: str = "") -> str:
    """A1111's ``html_info`` for one processed image: its postprocessing parameters as text."""
    parts: list[str] = []
    if spec.upscaler_1.lower() != "none":
        if spec.resize_mode == "scale_to":
            parts.append(f"Postprocess upscale to: {spec.upscaling_resize_w}x{spec.upscaling_resize_h}")
        else:
            parts.append(f"Postprocess upscale by: {spec.upscaling_resize:g}")
        parts.append(f"Postprocess upscaler: {spec.upscaler_1}")
        if spec.extras_upscaler_2_visibility > 0:
            parts.append(f"Postprocess upscaler 2: {spec.upscaler_2}")
    if spec.gfpgan_visibility > 0:
        parts.append(f"GFPGAN visibility: {spec.gfpgan_visibility:g}")
    if spec.codeformer_visibility > 0:
        parts.append(
            f"CodeFormer visibility: {spec.codeformer_visibility:g}, CodeFormer weight: {spec.codeformer_weight:g}"
        )
    text = ", ".join(parts)
    body = html.escape(f"{name}: {text}" if name else text)
    extra = "".join(f"<br>{html.escape(note)}" for note in notes)
    return f"<p>{body}{extra}</p>"
