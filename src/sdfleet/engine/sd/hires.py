"""The hires fix's upscale step: the first pass's latents brought to the second pass's size, as A1111 does it
— in latent space (the ``Latent…`` modes), or decoded, resized or run through a registered upscaler net
(ESRGAN, Real-ESRGAN Compact…: :mod:`sdfleet.engine.upscale`) to cover the target, centre-cropped and
encoded again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from sdfleet.engine.pool import NetPool
from sdfleet.engine.sd.models import Lookup, lookup
from sdfleet.engine.upscale.extras import upscale_to_factor
from sdfleet.errors import ValidationError

LATENT_UPSCALERS: Mapping[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS: Mapping[str, Image.Resampling] = {
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
    "None": Image.Resampling.LANCZOS,
}


def supported_upscalers() -> list[str]:
    """The built-in hires-fix upscaler names (registered upscaler nets come on top)."""
    return [*LATENT_UPSCALERS, *PIXEL_UPSCALERS]


def check_upscaler(name: str, upscalers: Lookup | None) -> str:
    """``name`` if it is built in or a net this engine can find; :class:`ValidationError` naming
    ``hr_upscaler`` otherwise."""
    if name in LATENT_UPSCALERS or name in PIXEL_UPSCALERS:
        return name
    if lookup(upscalers, name) is None:
        raise ValidationError(
            f"unknown hires upscaler {name!r}: a registered upscaler or one of {', '.join(supported_upscalers())}",
            field="hr_upscaler",
        )
    return name


def upscale_latents(
    upscaler: str,
    latents: torch.Tensor,
    *,
    first: tuple[int, int],
    target: tuple[int, int],
    shape: tuple[int, int, int],
    decode: Callable[[torch.Tensor], list[Image.Image]],
    encode: Callable[[list[Image.Image]], torch.Tensor],
    upscalers: Lookup | None,
    nets: NetPool,
    device: str,
    should_stop: Callable[[], bool],
) -> torch.Tensor:
    """The second pass's initial latents (``shape`` = channels, height, width) from the first pass's:
    scaled to cover ``target`` (px) from ``first`` (px), centre-cropped to it."""
    scale = max(target[0] / first[0], target[1] / first[1])
    cover_w, cover_h = round(first[0] * scale), round(first[1] * scale)
    if upscaler in LATENT_UPSCALERS:
        mode, antialias = LATENT_UPSCALERS[upscaler]
        factor = first[0] / latents.shape[-1]
        size = (round(cover_h / factor), round(cover_w / factor))
        kwargs: dict[str, Any] = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
        up = F.interpolate(latents.float(), size=size, mode=mode, **kwargs).to(latents.dtype)
        top, left = (size[0] - shape[1]) // 2, (size[1] - shape[2]) // 2
        return up[:, :, top : top + shape[1], left : left + shape[2]]
    pics = []
    for pic in decode(latents):
        if upscaler in PIXEL_UPSCALERS:
            big = pic.resize((cover_w, cover_h), PIXEL_UPSCALERS[upscaler])
        else:
            path = lookup(upscalers, upscaler)
            if path is None:
                raise ValidationError(f"unknown hires upscaler {upscaler!r}", field="hr_upscaler")
            # A1111's resize_image: the net up to the factor (÷8 target, at most three passes), then Lanczos
            big = upscale_to_factor(
                pic, upscaler, scale, nets={upscaler: path}, pool=nets, device=device, should_stop=should_stop
            )
            if big.size != (cover_w, cover_h):
                big = big.resize((cover_w, cover_h), Image.Resampling.LANCZOS)
        left, top = (cover_w - target[0]) // 2, (cover_h - target[1]) // 2
        pics.append(big.crop((left, top, left + target[0], top + target[1])))
    return encode(pics)


__all__ = ["LATENT_UPSCALERS", "PIXEL_UPSCALERS", "check_upscaler", "supported_upscalers", "upscale_latents"]
